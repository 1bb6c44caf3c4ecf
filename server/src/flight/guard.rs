//! The Flight service as clients reach it: [`Guarded`] wraps the Flight SQL
//! router and passes every call through, with two corrections.
//!
//! - arrow-flight's router decodes each command (`Any` → Flight SQL command)
//!   before any handler sees it and reports a command it cannot decode — a
//!   truncated protobuf, a garbage `Any` payload, SQL that is not UTF-8 — as
//!   INTERNAL. Those are the client's bytes, so they become INVALID_ARGUMENT.
//! - The router answers Flight `GetSchema` with UNIMPLEMENTED, and raw Flight
//!   clients (pyarrow.flight, Go, Java) call it. Here it decodes the command
//!   and asks the service ([`Describe`]) for the schema DoGet would stream.

use std::pin::Pin;

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{Any, Command};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::arrow::datatypes::SchemaRef;
use futures::Stream;
use prost::Message;
use tonic::{Code, Request, Response, Status, Streaming};

/// How arrow-flight words a command it could not decode (its `ParseError`,
/// debug-formatted into an INTERNAL status).
const UNDECODABLE: &str = "ParseError(\"Unable to decode";

/// The router with client decoding errors reported as INVALID_ARGUMENT and
/// `GetSchema` answered.
#[derive(Debug)]
pub struct Guarded<S>(pub S);

/// What `GetSchema` asks of the service: the schema of the results of a
/// Flight SQL command, without running it.
#[tonic::async_trait]
pub trait Describe {
    /// The schema DoGet streams for `command`, sent in `request`.
    async fn describe(
        &self,
        command: Command,
        request: &Request<FlightDescriptor>,
    ) -> Result<SchemaRef, Status>;
}

/// The Flight SQL command a `GetSchema` descriptor carries.
fn descriptor_command(descriptor: &FlightDescriptor) -> Result<Command, Status> {
    if descriptor.r#type() != DescriptorType::Cmd {
        return Err(Status::invalid_argument(
            "GetSchema takes a command descriptor (a Flight SQL command)",
        ));
    }
    let any = Any::decode(descriptor.cmd.as_ref())
        .map_err(|e| Status::invalid_argument(format!("malformed command: {e}")))?;
    Command::try_from(any).map_err(|e| Status::invalid_argument(format!("malformed command: {e}")))
}

/// INTERNAL for an undecodable command becomes INVALID_ARGUMENT; every other
/// status is kept.
pub fn client_status(status: Status) -> Status {
    if status.code() == Code::Internal && status.message().starts_with(UNDECODABLE) {
        Status::invalid_argument(format!("malformed command: {}", status.message()))
    } else {
        status
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn boxed<T, S>(response: Response<S>) -> Response<Boxed<T>>
where
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    response.map(|s| Box::pin(s) as Boxed<T>)
}

#[tonic::async_trait]
impl<S: FlightService + Describe> FlightService for Guarded<S> {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoExchangeStream = Boxed<FlightData>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.0
            .handshake(request)
            .await
            .map(boxed)
            .map_err(client_status)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.0
            .list_flights(request)
            .await
            .map(boxed)
            .map_err(client_status)
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.0.get_flight_info(request).await.map_err(client_status)
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.0
            .poll_flight_info(request)
            .await
            .map_err(client_status)
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let command = descriptor_command(request.get_ref())?;
        let schema = self.0.describe(command, &request).await?;
        Ok(Response::new(SchemaResult {
            schema: super::service::ipc_schema(&schema)?,
        }))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.0
            .do_get(request)
            .await
            .map(boxed)
            .map_err(client_status)
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.0
            .do_put(request)
            .await
            .map(boxed)
            .map_err(client_status)
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.0
            .do_exchange(request)
            .await
            .map(boxed)
            .map_err(client_status)
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.0
            .do_action(request)
            .await
            .map(boxed)
            .map_err(client_status)
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.0
            .list_actions(request)
            .await
            .map(boxed)
            .map_err(client_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_undecodable_commands_are_reclassified() {
        let undecodable = Status::internal(
            "ParseError(\"Unable to decode Any value: failed to decode Protobuf message\")",
        );
        assert_eq!(client_status(undecodable).code(), Code::InvalidArgument);
        let other = Status::internal("something broke");
        assert_eq!(client_status(other).code(), Code::Internal);
        let kept = Status::not_found("x");
        assert_eq!(client_status(kept).code(), Code::NotFound);
    }
}
