"""The compose rehearsal: `docker/compose.yaml` started without Docker.

The test reads the compose file (with `docker/.env` and compose's variable
interpolation) and `docker/Dockerfile` (the recon image's ENV, ENTRYPOINT,
CMD), and starts every service's command with its environment on a host of its
own: one network namespace per service, joined by veth pairs to a bridge in a
namespace of its own, with addresses of a private subnet that exists only
inside those namespaces and `/etc/netns/<ns>/hosts` naming every service, as
compose's network does. Images the project does not build have stand-ins:
`tansu` for `apache/kafka` (listening and advertising what the KAFKA_*
variables say), moto's S3 server for `minio/minio` (the `minio` command) and a
small `mc` (alias set / mb / ready) on boto3 for `minio/mc`; shell commands run
as written, in `sh`. The recon image is the debug `recon` and `recon-cli`.

Then, as a user of the compose file would: recon passes its healthcheck, the
generator completes, a client on another host queries `final_index` with the
compose credentials, a query without them is Unauthenticated, and the refresh
schedule (REFRESH_INTERVAL_SECS set in the environment, which wins over
docker/.env as with compose) writes a snapshot to the bucket.

Needs root (network namespaces); CI runs as root. Ports published to the
Docker host (`ports:`) are not rehearsed: the client reaches recon by its
service name, as the generator does."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKER = os.path.join(ROOT, "docker")
SUBNET = "10.213.47"  # a /24 that exists only inside the test's namespaces
REFRESH_SECS = "5"


# --- compose and Dockerfile, read as compose and docker read them ------------


def read_env_file(path):
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key.strip()] = value
    return values


VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value, variables):
    """Compose's interpolation: ${VAR}, $VAR, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}, $$ for a literal $."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def one(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        present = name in variables
        empty = not variables.get(name)
        if op in (":-", "-"):
            return arg if (empty if op == ":-" else not present) else variables[name]
        if op in (":?", "?"):
            if empty if op == ":?" else not present:
                raise ValueError(f"required variable {name} is missing a value: {arg}")
            return variables[name]
        return variables.get(name, "")

    return VARIABLE.sub(one, value)


def load_compose(environ):
    with open(os.path.join(DOCKER, "compose.yaml")) as f:
        compose = yaml.safe_load(f)
    variables = read_env_file(os.path.join(DOCKER, ".env"))
    variables.update(environ)
    return interpolate(compose, variables)


def recon_image():
    """The final stage of docker/Dockerfile: ENV, WORKDIR, ENTRYPOINT, CMD."""
    with open(os.path.join(DOCKER, "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    image = {"env": {}, "workdir": "/", "entrypoint": [], "cmd": []}
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        word = word.upper()
        if word == "FROM":
            image = {"env": {}, "workdir": "/", "entrypoint": [], "cmd": []}
        elif word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                image["env"][key] = value
        elif word == "WORKDIR":
            image["workdir"] = rest.strip()
        elif word in ("ENTRYPOINT", "CMD"):
            image[word.lower()] = json.loads(rest)
    return image


def as_list(value):
    if value is None:
        return None
    return value if isinstance(value, list) else shlex.split(value)


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def start_order(services):
    order, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        for dependency in services[name].get("depends_on") or {}:
            visit(dependency)
        order.append(name)

    for name in services:
        visit(name)
    return order


# --- hosts of their own: network namespaces ------------------------------------


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


class Network:
    """A bridge in a namespace of its own and one namespace per host."""

    def __init__(self, names):
        self.prefix = f"rc{os.getpid()}"
        self.switch = f"{self.prefix}-sw"
        self.hosts = {name: f"{SUBNET}.{i + 2}" for i, name in enumerate(names)}
        self.namespaces = []

    def ns(self, name):
        return f"{self.prefix}-{name}"

    def __enter__(self):
        try:
            self._add(self.switch)
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            pytest.fail(
                f"the compose rehearsal needs network namespaces (root and `ip netns`): "
                f"cannot create one: {detail.strip()}"
            )
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{address} {name}\n" for name, address in self.hosts.items()
        )
        for i, (name, address) in enumerate(self.hosts.items()):
            ns = self.ns(name)
            self._add(ns)
            run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns", self.switch)
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", self.switch, "link", "set", f"p{i}", "master", "br0")
            run("ip", "-n", self.switch, "link", "set", f"p{i}", "up")
            etc = f"/etc/netns/{ns}"
            os.makedirs(etc, exist_ok=True)
            with open(f"{etc}/hosts", "w") as f:
                f.write(hosts)
        return self

    def _add(self, ns):
        run("ip", "netns", "add", ns)
        self.namespaces.append(ns)

    def __exit__(self, *exc):
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


# --- stand-ins for the images recon does not build ------------------------------

MC = '''#!{python}
"""A stand-in for MinIO's `mc` with what compose.yaml uses: alias set, mb, ready."""
import json, os, sys
import boto3, botocore
aliases_file = os.path.join(os.environ["HOME"], "mc-aliases.json")
aliases = json.load(open(aliases_file)) if os.path.exists(aliases_file) else {{}}
args = sys.argv[1:]
if args[:2] == ["alias", "set"]:
    name, url, user, password = args[2:6]
    aliases[name] = [url, user, password]
    json.dump(aliases, open(aliases_file, "w"))
elif args[0] == "mb":
    target = [a for a in args[1:] if not a.startswith("--")][0]
    alias, bucket = target.split("/", 1)
    url, user, password = aliases[alias]
    s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=user,
                      aws_secret_access_key=password, region_name="us-east-1")
    try:
        s3.create_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as e:
        if "--ignore-existing" not in args or "BucketAlready" not in str(e):
            raise
    print(f"Bucket created successfully `{{target}}`.")
elif args[0] == "ready":
    import socket
    socket.create_connection(("127.0.0.1", 9000), timeout=2).close()
else:
    sys.exit(f"mc stand-in: unsupported command {{args}}")
'''

MINIO = '''#!/bin/sh
# A stand-in for `minio server <dir> ...`: moto's S3 server on MinIO's port.
exec {moto} -H 0.0.0.0 -p 9000
'''


class Rehearsal:
    def __init__(self, tmp, binary, environ):
        self.tmp = tmp
        self.compose = load_compose(environ)
        self.services = self.compose["services"]
        self.image = recon_image()
        self.network = Network(list(self.services) + ["client"])
        self.processes = {}
        bin_dir = os.path.dirname(binary)
        recon_bin = self._dir("image-recon")
        for name in ("recon", "recon-cli"):
            os.symlink(os.path.join(bin_dir, name), os.path.join(recon_bin, name))
        mc_bin = self._dir("image-mc")
        self._script(os.path.join(mc_bin, "mc"), MC.format(python=sys.executable))
        minio_bin = self._dir("image-minio")
        moto = os.environ.get("MOTO_SERVER") or shutil.which("moto_server")
        self._script(os.path.join(minio_bin, "minio"), MINIO.format(moto=moto))
        shutil.copy(os.path.join(mc_bin, "mc"), os.path.join(minio_bin, "mc"))
        self.bin = {"recon": recon_bin, "mc": mc_bin, "minio": minio_bin}

    def _dir(self, name):
        path = os.path.join(self.tmp, name)
        os.makedirs(path, exist_ok=True)
        return path

    @staticmethod
    def _script(path, text):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)

    def kind(self, service):
        """Which image a service runs: recon, kafka, minio or mc."""
        image = service.get("image", "")
        if "build" in service or image.startswith("recon"):
            return "recon"
        for prefix, kind in (("apache/kafka", "kafka"), ("minio/minio", "minio"), ("minio/mc", "mc")):
            if image.startswith(prefix):
                return kind
        raise AssertionError(f"no stand-in for image {image!r}")

    def command_of(self, name):
        """The argv and environment a service's container would run."""
        service = self.services[name]
        kind = self.kind(service)
        home = self._dir(f"home-{name}")
        env = {"HOME": home, "PATH": "/usr/local/bin:/usr/bin:/bin"}
        if kind == "kafka":
            kafka = environment(service)
            listen = kafka["KAFKA_LISTENERS"].split(",")[0].split("://")[1]
            advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")[0].split("://")[1]
            host, _, port = listen.rpartition(":")
            argv = [tansu(), "broker", "--listener-url", f"tcp://{host or '0.0.0.0'}:{port}",
                    "--advertised-listener-url", f"tcp://{advertised}",
                    "--storage-engine", "memory://tansu/", "--silent"]
            return argv, env
        if kind == "recon":
            for key, value in self.image["env"].items():
                env[key] = value.replace(self.image["workdir"], home, 1)
            entrypoint = self.image["entrypoint"]
            cmd = self.image["cmd"]
        elif kind == "minio":
            entrypoint, cmd = ["minio"], []
        else:
            entrypoint, cmd = ["mc"], []
        env.update(environment(service))
        env["PATH"] = f"{self.bin[kind]}:{env['PATH']}"
        if "entrypoint" in service:
            entrypoint, cmd = as_list(service["entrypoint"]), []
        if "command" in service:
            cmd = as_list(service["command"])
        return entrypoint + cmd, env

    def exec_argv(self, name, argv, env):
        return ["ip", "netns", "exec", self.network.ns(name), "env", "-i",
                *(f"{k}={v}" for k, v in env.items()), *argv]

    def start(self, name):
        argv, env = self.command_of(name)
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        self.processes[name] = subprocess.Popen(
            self.exec_argv(name, argv, env), cwd=env["HOME"], stdout=log, stderr=subprocess.STDOUT
        )

    def log(self, name):
        with open(os.path.join(self.tmp, f"{name}.log")) as f:
            return f.read()[-6000:]

    def healthy(self, name):
        """Runs the service's healthcheck until it passes (compose's interval,
        at most 1 s apart here, and its retries)."""
        service = self.services[name]
        check = service.get("healthcheck")
        kind = self.kind(service)
        if kind == "kafka":
            # The stand-in is tansu, not Kafka's shell tools: probe its listener.
            port = environment(service)["KAFKA_LISTENERS"].split(",")[0].rpartition(":")[2]
            test = [sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 2)"]
        else:
            test = check["test"]
            test = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        _, env = self.command_of(name)
        retries = int(check.get("retries", 3)) if check else 30
        for _ in range(retries):
            if self.processes[name].poll() is not None:
                pytest.fail(f"{name} exited with {self.processes[name].returncode}:\n{self.log(name)}")
            probe = subprocess.run(self.exec_argv(name, test, env), capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                return
            time.sleep(1)
        pytest.fail(f"{name} did not pass its healthcheck {test}: {probe.stderr}\n{self.log(name)}")

    def completes(self, name, timeout):
        try:
            code = self.processes[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not complete within {timeout} s:\n{self.log(name)}")
        assert code == 0, f"{name} exited with {code}:\n{self.log(name)}"

    def up(self):
        for name in start_order(self.services):
            for dependency, condition in (self.services[name].get("depends_on") or {}).items():
                condition = (condition or {}).get("condition", "service_started")
                if condition == "service_healthy":
                    self.healthy(dependency)
                elif condition == "service_completed_successfully":
                    self.completes(dependency, timeout=120)
            self.start(name)

    def client(self, argv, env=None):
        """A program on the client's host (recon-cli from the recon image)."""
        env = {"HOME": self._dir("home-client"), "PATH": f"{self.bin['recon']}:/usr/bin:/bin", **(env or {})}
        return subprocess.run(self.exec_argv("client", argv, env), capture_output=True, text=True, timeout=120)

    def down(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def tansu():
    found = os.environ.get("TANSU") or shutil.which("tansu") or os.path.expanduser("~/.cargo/bin/tansu")
    assert os.path.exists(found), "tansu is needed (cargo install tansu --locked --features dynostore)"
    return found


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    binary = os.environ.get("RECON_BIN")
    if not binary:
        pytest.fail("RECON_BIN must name the recon binary (scripts/test.sh sets it)")
    tmp = str(tmp_path_factory.mktemp("compose"))
    rehearsal = Rehearsal(tmp, binary, {"REFRESH_INTERVAL_SECS": REFRESH_SECS})
    with rehearsal.network:
        try:
            rehearsal.up()
            yield rehearsal
        finally:
            rehearsal.down()


def credentials(compose):
    """The login compose gives the generator (interpolated: docker/.env, or
    the shell when it sets them)."""
    env = environment(compose.services["generator"])
    return {"RECON_USER": env["RECON_USER"], "RECON_PASSWORD": env["RECON_PASSWORD"]}


def test_recon_is_healthy_and_the_generator_completes(compose):
    compose.healthy("recon")
    compose.completes("generator", timeout=600)


def test_a_client_on_another_host_queries_final_index(compose):
    compose.completes("generator", timeout=600)
    result = compose.client(
        ["recon-cli", "--host", "recon", "sql", "--format", "csv",
         "SELECT count(*) AS n, count(DISTINCT transaction_id) AS ids FROM final_index"],
        credentials(compose),
    )
    assert result.returncode == 0, result.stderr
    n, ids = map(int, result.stdout.splitlines()[1].split(","))
    generated = int(next(a for a in compose.services["generator"]["command"] if a.startswith("--transactions=")).split("=")[1])
    # One row per transaction and statement match (the seed's left join).
    assert ids == generated and n >= ids, result.stdout


ADBC_QUERY = """
import sys
import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_manager import AdbcStatusCode, Error
kwargs = {"db_kwargs": {"username": sys.argv[2], "password": sys.argv[3]}} if len(sys.argv) > 2 else {}
try:
    with flightsql.connect(sys.argv[1], **kwargs) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM final_index")
        print(cur.fetchone()[0])
except Error as e:
    print(AdbcStatusCode(e.status_code).name)
"""


def test_a_query_without_the_credentials_is_unauthenticated(compose):
    """ADBC (what pandas, polars and Superset's drivers use) from the client's
    host: the compose credentials work, none or a wrong password do not."""
    uri = "grpc://recon:50051"
    user, password = credentials(compose)["RECON_USER"], credentials(compose)["RECON_PASSWORD"]
    for args, expected in (
        ([user, password], None),
        ([], "UNAUTHENTICATED"),
        ([user, "not-the-password"], "UNAUTHENTICATED"),
    ):
        result = compose.client([sys.executable, "-c", ADBC_QUERY, uri, *args])
        assert result.returncode == 0, result.stderr
        answer = result.stdout.strip()
        if expected:
            assert answer == expected, (args, answer)
        else:
            assert int(answer) > 0, answer


def test_the_refresh_schedule_writes_a_snapshot_to_the_bucket(compose):
    compose.completes("generator", timeout=600)
    deadline = time.time() + 120
    while True:
        result = compose.client(
            ["recon-cli", "--host", "recon", "sql", "--format", "csv",
             "SELECT location FROM index_snapshots WHERE view = 'final_index' AND rows > 0"],
            credentials(compose),
        )
        assert result.returncode == 0, result.stderr
        locations = result.stdout.splitlines()[1:]
        if locations:
            break
        assert time.time() < deadline, f"no final_index snapshot within 120 s:\n{compose.log('recon')}"
        time.sleep(2)
    # The location is relative to the warehouse, s3://<bucket>/<prefix>.
    warehouse = next(a for a in compose.services["recon"]["command"] if a.startswith("--warehouse="))
    bucket, _, prefix = warehouse.split("=", 1)[1].removeprefix("s3://").partition("/")
    key = f"{prefix}/{locations[0]}".lstrip("/")
    s3 = compose.services["recon"]["environment"]
    listing = compose.client(
        [sys.executable, "-c",
         "import boto3, sys; s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1');"
         "r = s3.list_objects_v2(Bucket=sys.argv[2], Prefix=sys.argv[3]);"
         "print(sum(o['Size'] for o in r.get('Contents', [])))",
         s3["AWS_ENDPOINT_URL"], bucket, key],
        {"AWS_ACCESS_KEY_ID": s3["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": s3["AWS_SECRET_ACCESS_KEY"]},
    )
    assert listing.returncode == 0, listing.stderr
    assert int(listing.stdout) > 0, f"nothing stored under s3://{bucket}/{key}"
