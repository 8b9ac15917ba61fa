"""RoleFerry Integrations: contact search, bulk enrichment and provider webhooks, with a local
sandbox of every provider. `roleferry serve` runs it; the other commands use or manage it."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from roleferry.api_client import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    KEY_FILE,
    ApiClient,
    ClientError,
    connect_url,
    forget_server,
    record_server,
    resolve_server,
)
from roleferry.config import Settings
from roleferry.csv_export import neutralise_csv_text
from roleferry.db import Database
from roleferry.errors import Conflict
from roleferry.logging import configure_logging
from roleferry.process_lock import AlreadyRunning
from roleferry.runtime import Runtime
from roleferry.startup import LocalKey, ReadyServer, banner, print_lines
from roleferry.users import service as users

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
users_app = typer.Typer(no_args_is_help=True, help="Manage users and their API keys.")
app.add_typer(users_app, name="users")

LOCAL_USER_EMAIL = "local@roleferry.localhost"
ServerOption = Annotated[
    str | None,
    typer.Option(
        envvar="ROLEFERRY_SERVER",
        help="A running roleferry, as a URL or host:port. Default: HOST/PORT as `serve` reads "
        "them, else the address the local `serve` recorded, else 127.0.0.1:8000.",
    ),
]
ApiKeyOption = Annotated[str | None, typer.Option(envvar="ROLEFERRY_API_KEY", help="Your API key.")]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            (f"ROLEFERRY_{'_'.join(str(p) for p in e['loc']).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        _fail(f"invalid configuration: {problems}", code=2)
    try:
        configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    except ValueError as exc:
        _fail(f"invalid configuration: ROLEFERRY_LOG_LEVEL: {exc}", code=2)
    return settings


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            _fail(
                f"{host}:{port} is already in use. Stop whatever listens there, "
                "or pick another port with --port (make run PORT=8001)."
            )
        _fail(f"cannot listen on {host}:{port}: {exc.strerror}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def _create_first_user(settings: Settings) -> str | None:
    """On an empty database, create the local admin and return its key."""
    database = Database(settings.database_url)
    try:
        async with database.session() as session:
            if await users.count_users(session) > 0:
                return None
            created = await users.create_user(session, LOCAL_USER_EMAIL, is_admin=True)
            return created.key.raw
    finally:
        await database.dispose()


def _save_key(key: str, key_file: Path) -> None:
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n")


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(envvar="HOST", help="Interface to listen on.")
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(envvar="PORT", help="Port to listen on.")] = DEFAULT_PORT,
    workers: Annotated[
        int, typer.Option(min=1, help="API processes sharing the port (PostgreSQL only if > 1).")
    ] = 1,
) -> None:
    """Migrate the database and serve the API, the dashboard, the workers and the sandbox."""
    from roleferry.app import create_app
    from roleferry.monitoring import metrics

    settings = _settings()
    if workers > 1 and settings.is_sqlite:
        _fail(
            "--workers needs PostgreSQL: SQLite is served by one process. "
            "Set ROLEFERRY_DATABASE_URL=postgresql://… to run several."
        )
    directory = metrics.multiprocess_dir()
    if directory is None and workers > 1:
        directory = Path(settings.data_dir) / f"metrics-{port}"
    if directory is not None:
        metrics.use_multiprocess(directory, clean=True)
    server_url = connect_url(host, port)
    runtime = Runtime(settings, server_url, listen_host=host)
    try:
        runtime.lock()
    except AlreadyRunning as exc:
        _fail(str(exc))
    runtime.migrate()
    sock = _bind(host, port)
    data_dir = Path(settings.data_dir)
    new_key = asyncio.run(_create_first_user(settings))
    key = LocalKey(data_dir / KEY_FILE, new_key)
    if new_key:
        _save_key(new_key, key.path)

    def ready() -> None:
        record_server(data_dir, server_url)
        print_lines(
            banner(
                settings, runtime.public_url, key, LOCAL_USER_EMAIL, terminal=sys.stdout.isatty()
            )
        )

    if workers == 1:
        config = uvicorn.Config(
            create_app(runtime), log_config=None, proxy_headers=True, timeout_graceful_shutdown=10
        )
        ReadyServer(config, ready, lambda: forget_server(data_dir, server_url)).run(sockets=[sock])
        return
    # Each process builds its own runtime (its own DBOS executor) from the environment; the
    # migration above already ran, once, under the lock.
    os.environ[_SERVE_URL_ENV] = server_url
    os.environ[_LISTEN_HOST_ENV] = host
    config = uvicorn.Config(
        f"{__name__}:worker_app",
        factory=True,
        workers=workers,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
    ready()
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        forget_server(data_dir, server_url)


_SERVE_URL_ENV = "_ROLEFERRY_SERVE_URL"
_LISTEN_HOST_ENV = "_ROLEFERRY_LISTEN_HOST"


def worker_app() -> FastAPI:
    """The app of one `serve --workers N` process, built in that process."""
    from roleferry.app import create_app

    settings = _settings()
    return create_app(
        Runtime(
            settings,
            os.environ.get(_SERVE_URL_ENV, connect_url(DEFAULT_HOST, DEFAULT_PORT)),
            listen_host=os.environ.get(_LISTEN_HOST_ENV, DEFAULT_HOST),
        )
    )


@app.command()
def migrate() -> None:
    """Apply database migrations up to the latest."""
    settings = _settings()
    Runtime(settings).migrate()
    typer.echo("database is up to date")


@app.command()
def worker() -> None:
    """Run durable workers only (no HTTP), for PostgreSQL deployments with several processes."""
    settings = _settings()
    if settings.is_sqlite:
        _fail(
            "`roleferry worker` needs PostgreSQL: on SQLite, `roleferry serve` runs the workers "
            "in its own process. Set ROLEFERRY_DATABASE_URL=postgresql://… to run several."
        )
    from roleferry.monitoring import metrics

    directory = metrics.multiprocess_dir()
    if directory is not None:
        # Beside a `serve` on this host: its /metrics shows this worker's figures too.
        metrics.use_multiprocess(directory, clean=False)
    runtime = Runtime(settings)
    runtime.migrate()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    async def run() -> None:
        await runtime.start()
        typer.echo("worker started; Ctrl-C to stop")
        try:
            await asyncio.to_thread(stop.wait)
        finally:
            await runtime.stop()

    asyncio.run(run())


@users_app.command("create")
def users_create(
    email: str,
    admin: Annotated[bool, typer.Option("--admin", help="May manage other users.")] = False,
) -> None:
    """Create a user; its new API key is printed alone on the last line."""
    settings = _settings()
    Runtime(settings).migrate()

    async def create() -> str:
        database = Database(settings.database_url)
        try:
            async with database.session() as session:
                created = await users.create_user(session, email, is_admin=admin)
                return created.key.raw
        finally:
            await database.dispose()

    try:
        key = asyncio.run(create())
    except Conflict as exc:
        _fail(exc.message)
    typer.echo(f"created user {email.strip().lower()}{' (admin)' if admin else ''}; API key:")
    typer.echo(key)


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    seed: Annotated[
        int | None, typer.Option(help="World seed (default ROLEFERRY_SANDBOX_SEED).")
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(help="Start with a fault, e.g. apollo:error_rate=0.3 (repeatable)."),
    ] = None,
    target_url: Annotated[
        str, typer.Option(help="The server webhooks are delivered to (…/webhooks/<provider>).")
    ] = "http://127.0.0.1:8000",
) -> None:
    """Serve the provider simulators alone, at http://HOST:PORT/sandbox/<provider>."""
    from roleferry.sandbox.app import Sandbox, standalone_app
    from roleferry.sandbox.control import parse_fault_spec

    settings = _settings()
    faults = [*settings.sandbox_faults, *(fault or [])]
    for spec in faults:
        try:
            parse_fault_spec(spec)
        except ValueError as exc:
            _fail(f"bad --fault: {exc}", code=2)
    simulators = Sandbox.for_settings(
        settings.model_copy(
            update={
                "sandbox_seed": settings.sandbox_seed if seed is None else seed,
                "sandbox_faults": faults,
            }
        ),
        target_url,
        listen_host=host,
        serves_this_server=False,
    )
    sock = _bind(host, port)
    typer.echo(f"Sandbox: http://{host}:{port}/sandbox/<provider>  (webhooks go to {target_url})")
    config = uvicorn.Config(standalone_app(simulators), log_config=None)
    uvicorn.Server(config).run(sockets=[sock])


def _client(server: str | None, api_key: str | None, timeout: float) -> ApiClient:
    """The running server and the key to use: --api-key / ROLEFERRY_API_KEY, else the local
    admin key that `serve` saved in the data directory (read only when needed, so that a
    client given both needs no valid server configuration)."""

    def data_dir() -> Path:
        return Path(_settings().data_dir)

    try:
        target = resolve_server(server, data_dir)
    except ClientError as exc:
        _fail(exc.message, code=2)
    if api_key:
        return ApiClient(target, api_key, "from --api-key or ROLEFERRY_API_KEY", timeout)
    key_file = data_dir() / KEY_FILE
    if key_file.exists():
        return ApiClient(target, key_file.read_text().strip(), f"in {key_file}", timeout)
    _fail(
        "no API key: pass --api-key, set ROLEFERRY_API_KEY, or run `roleferry serve` once "
        f"so that {key_file} holds the local key",
        code=2,
    )


def _fail_with(exc: ClientError) -> NoReturn:
    """The error, then each detail the API gave (every provider's attempt, every field)."""
    typer.secho(f"error: {exc.message}", err=True, fg=typer.colors.RED)
    for line in exc.lines:
        typer.secho(f"  {line}", err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


def _people(count: int) -> str:
    return f"{count} {'person' if count == 1 else 'people'}"


@app.command()
def search(
    domain: Annotated[str, typer.Argument(help="The company's domain, e.g. acme.com.")],
    title: Annotated[
        list[str], typer.Option("--title", "-t", help="A title to look for (repeatable).")
    ],
    limit: Annotated[int, typer.Option(help="At most this many people.")] = 10,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Ask the providers again, not the cache.")
    ] = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Find people with these titles at a company, through a running server, as a table."""
    from rich.console import Console
    from rich.table import Table

    try:
        with _client(server, api_key, timeout=15) as client:
            body = client.request(
                "POST",
                "/api/v1/contacts/search",
                json={"domain": domain, "titles": title, "limit": limit, "refresh": refresh},
                fields=("contacts", "attempts"),
            ).json()
    except ClientError as exc:
        _fail_with(exc)
    console = Console(width=140)
    contacts = body["contacts"]
    if contacts:
        table = Table(title=f"{domain}: {_people(len(contacts))} (via {body['provider']})")
        for column in ("Name", "Title", "Email", "Status", "Email from"):
            table.add_column(column)
        for contact in contacts:
            name = (
                contact["full_name"]
                or f"{contact['first_name'] or ''} {contact['last_name'] or ''}"
            )
            table.add_row(
                name.strip(),
                contact["title"] or "",
                contact["email"] or "",
                contact["email_status"] or "",
                contact["sources"].get("email", ""),
            )
        console.print(table)
    else:
        console.print(f"No one at {domain} with a title like {', '.join(title)}.")
    tried = ", ".join(
        f"{a['provider']} {a['outcome']} {a['latency_ms']:.0f} ms" for a in body["attempts"]
    )
    console.print(f"[dim]{'cached' if body['cached'] else tried}[/dim]")
    if body.get("degraded"):
        console.print("[yellow]incomplete: a provider was skipped or failed (not cached)[/yellow]")


@app.command()
def enrich(
    csv_file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="first_name,last_name,domain[,title,linkedin_url]"
        ),
    ],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Where to write the results CSV.")
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="Also POST the summary here when done.")
    ] = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Enrich a CSV of contacts as a job on a running server, with a progress bar.

    Ctrl-C is safe: the job goes on, and the same command with the same file follows it again.
    """
    import hashlib
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    data = csv_file.read_bytes()
    idempotency = {
        "Idempotency-Key": "cli-"
        + hashlib.sha256(data + (callback_url or "").encode()).hexdigest(),
    }
    base = "/api/v1/enrichment-jobs"
    target = output or csv_file.with_name(csv_file.stem + ".enriched.csv")
    try:
        with _client(server, api_key, timeout=60) as client:
            body = client.request(
                "POST",
                base,
                ok=(202,),
                fields=("id", "total", "rejected"),
                headers=idempotency,
                files={"file": (csv_file.name, data, "text/csv")},
                data={"callback_url": callback_url} if callback_url else None,
            ).json()
            job_id = body["id"]
            for row in body["rejected"]:
                typer.secho(
                    f"line {row['line']}: {row['field']} {row['reason']}",
                    err=True,
                    fg=typer.colors.YELLOW,
                )
            typer.echo(f"job {job_id}: {body['total']} contacts")
            columns = (
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("found {task.fields[found]}"),
                TextColumn("{task.fields[rate]}/s"),
                TimeRemainingColumn(),
            )
            with Progress(*columns) as progress:
                task = progress.add_task("enriching", total=body["total"], found=0, rate="0.0")
                started = time.monotonic()
                while True:
                    job = client.request(
                        "GET", f"{base}/{job_id}", fields=("status", "done", "found")
                    ).json()
                    rate = job["done"] / max(0.1, time.monotonic() - started)
                    progress.update(
                        task, completed=job["done"], found=job["found"], rate=f"{rate:.1f}"
                    )
                    if job["status"] in ("succeeded", "partially_succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.5)
            results = client.request(
                "GET", f"{base}/{job_id}/results", headers={"Accept": "text/csv"}
            )
            target.write_text(neutralise_csv_text(results.text), newline="")
    except ClientError as exc:
        _fail_with(exc)
    except KeyboardInterrupt:
        typer.echo("\nstopped following; the job goes on. Run the same command to follow it again.")
        raise typer.Exit(130) from None
    typer.echo(
        f"{job['status']}: {job['found']} found, {job['not_found']} not found, "
        f"{job['failed']} failed; results in {target}"
    )


def main() -> None:
    app()
