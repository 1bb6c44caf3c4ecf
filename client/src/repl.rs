//! The interactive shell (`recon-cli` without a command): statements end with
//! `;` and may span lines, history is kept in `~/.recon_history`, and a few
//! backslash commands describe the catalog — `\d` lists the tables, `\d name`
//! describes one, `\?` helps, `\q` quits. Standard input that is not a terminal
//! is read line by line the same way, so scripts can be piped in.

use std::time::Instant;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::output::{Format, write};
use crate::{Client, QueryResult, query};

const PROMPT: &str = "recon> ";
const CONTINUE: &str = "   ...> ";
const HELP: &str = "statements end with ';' and may span lines\n\
  \\d          list tables and views\n\
  \\d NAME     describe a table\n\
  \\?          this help\n\
  \\q          quit (or Ctrl-D)";

/// What one input line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    /// A complete statement (without its `;`).
    Statement(String),
    /// A backslash command.
    Meta(String),
    /// More lines are needed.
    Incomplete,
}

/// Collects lines into statements.
#[derive(Debug, Default)]
struct Buffer {
    text: String,
}

impl Buffer {
    fn push(&mut self, line: &str) -> Input {
        let trimmed = line.trim();
        if self.text.is_empty() && trimmed.starts_with('\\') {
            return Input::Meta(trimmed.to_owned());
        }
        if trimmed.is_empty() && self.text.is_empty() {
            return Input::Incomplete;
        }
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(line);
        match self.text.trim_end().strip_suffix(';') {
            Some(statement) => {
                let statement = statement.trim().to_owned();
                self.text.clear();
                Input::Statement(statement)
            }
            None => Input::Incomplete,
        }
    }

    /// What is left at the end of input, as a last statement.
    fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.text);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    }
}

/// Runs the shell until `\q` or end of input.
pub async fn run(client: &mut Client) -> anyhow::Result<()> {
    let mut editor = DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".recon_history"));
    if let Some(path) = &history {
        // A missing history file is normal on first use.
        let _ = editor.load_history(path);
    }
    let mut buffer = Buffer::default();
    loop {
        let prompt = if buffer.text.is_empty() {
            PROMPT
        } else {
            CONTINUE
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.text.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        match buffer.push(&line) {
            Input::Incomplete => {}
            Input::Meta(command) => {
                let _ = editor.add_history_entry(&command);
                if !meta(client, &command).await {
                    break;
                }
            }
            Input::Statement(sql) => {
                let _ = editor.add_history_entry(format!("{sql};"));
                execute(client, &sql).await;
            }
        }
    }
    if let Some(sql) = buffer.finish() {
        execute(client, &sql).await;
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// Runs one statement and prints its result or error; the shell goes on either way.
async fn execute(client: &mut Client, sql: &str) {
    let started = Instant::now();
    match query(client, sql).await {
        Ok(result) => print_result(&result, started),
        Err(e) => eprintln!("error: {e:#}"),
    }
}

fn print_result(result: &QueryResult, started: Instant) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = write(&result.batches, &result.schema, Format::Table, &mut out) {
        eprintln!("error: {e:#}");
    }
    let rows = result.num_rows();
    println!(
        "({rows} row{}, {} ms)",
        if rows == 1 { "" } else { "s" },
        started.elapsed().as_millis()
    );
}

/// Handles a backslash command; false = quit.
async fn meta(client: &mut Client, command: &str) -> bool {
    let mut words = command.split_whitespace();
    match (words.next(), words.next()) {
        (Some("\\q"), _) => return false,
        (Some("\\?"), _) => println!("{HELP}"),
        (Some("\\d"), None) => {
            execute(
                client,
                "SELECT table_name, table_type FROM information_schema.tables \
                 WHERE table_schema = 'public' ORDER BY table_name",
            )
            .await;
        }
        (Some("\\d"), Some(table)) => describe(client, table).await,
        _ => eprintln!("unknown command {command}; \\? lists the commands"),
    }
    true
}

async fn describe(client: &mut Client, table: &str) {
    let name = table.trim_matches('"').replace('\'', "''");
    let sql = format!(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = '{name}' ORDER BY ordinal_position"
    );
    match query(client, &sql).await {
        Ok(result) if result.num_rows() == 0 => eprintln!("error: no table named {table}"),
        Ok(result) => print_result(&result, Instant::now()),
        Err(e) => eprintln!("error: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_span_lines_until_semicolon() {
        let mut buffer = Buffer::default();
        assert_eq!(buffer.push("SELECT 1"), Input::Incomplete);
        assert_eq!(
            buffer.push("  + 1 ;  "),
            Input::Statement("SELECT 1\n  + 1".into())
        );
        assert_eq!(buffer.push(""), Input::Incomplete);
        assert_eq!(
            buffer.push("SELECT 2;"),
            Input::Statement("SELECT 2".into())
        );
        assert_eq!(buffer.finish(), None);
    }

    #[test]
    fn backslash_commands_only_at_statement_start() {
        let mut buffer = Buffer::default();
        assert_eq!(
            buffer.push(" \\d merchants "),
            Input::Meta("\\d merchants".into())
        );
        assert_eq!(buffer.push("SELECT '\\d'"), Input::Incomplete);
        assert_eq!(buffer.finish(), Some("SELECT '\\d'".into()));
    }
}
