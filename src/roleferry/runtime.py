"""What one roleferry process owns: settings, the database, DBOS, and on SQLite the lock
that keeps it the only process. Built by the CLI (or a test), started by the app's lifespan."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from sqlalchemy import text

from roleferry import migrations
from roleferry.config import Settings
from roleferry.db import Database, DatabaseUrls
from roleferry.drafting.stream import model_chain
from roleferry.executors import Heartbeat, new_executor_id
from roleferry.logging import route_dbos_logs
from roleferry.monitoring.dogstatsd import DogStatsD
from roleferry.monitoring.integrations import IntegrationStats
from roleferry.outbound import Resolver, system_resolver
from roleferry.outreach.dispatch import Dispatcher
from roleferry.process_lock import ProcessLock
from roleferry.providers.catalog import SPECS
from roleferry.providers.registry import Providers
from roleferry.users.keycache import KeyCache
from roleferry.webhooks.inbox import InboxWriter
from roleferry.webhooks.processor import InboxProcessor

log = structlog.get_logger(__name__)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        server_url: str = "http://127.0.0.1:8000",
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.settings = settings
        self.server_url = server_url.rstrip("/")
        # The interface `serve` listens on: the sandbox's control plane depends on it.
        self.listen_host = listen_host
        self.urls = DatabaseUrls(settings.database_url)
        self._lock = (
            ProcessLock(self.urls.sqlite_path.with_name(self.urls.sqlite_path.name + ".lock"))
            if self.urls.is_sqlite
            else None
        )
        self._locked = False
        self.database: Database | None = None
        self.providers: Providers | None = None
        self.integration_stats = IntegrationStats()
        self.api_keys = KeyCache(settings.api_key_cache_s)
        self.inbox: InboxProcessor | None = None
        self.inbox_writer: InboxWriter | None = None
        self.dbos_launched = False
        self.dispatcher: Dispatcher | None = None
        self.executor_id = self._executor_id()
        self.heartbeat: Heartbeat | None = None
        self.dogstatsd: DogStatsD | None = None
        self._system_migrated = False
        self.clock: Callable[[], float] = time.time
        self.resolver: Resolver = system_resolver

    @property
    def public_url(self) -> str:
        return (self.settings.public_url or self.server_url).rstrip("/")

    @property
    def db(self) -> Database:
        if self.database is None:
            raise RuntimeError("the runtime is not started")
        return self.database

    def lock(self) -> None:
        """On SQLite, claim the deployment; raises AlreadyRunning if another process has it."""
        if self._lock is not None and not self._locked:
            self._lock.acquire()
            self._locked = True

    def migrate(self) -> bool:
        """Brings the schema up to date; returns whether anything changed. On PostgreSQL,
        under an advisory lock, DBOS's system database too: processes starting together
        migrate one after another, the later ones finding nothing to do."""
        self.urls.ensure_directory()
        sync_url = self.urls.render(self.urls.sync_url)
        if self.urls.is_sqlite:
            before = migrations.current(sync_url)
            migrations.upgrade(sync_url)
            return migrations.current(sync_url) != before
        from dbos import DBOS

        with migrations.advisory_lock(sync_url):
            before = migrations.current(sync_url)
            migrations.upgrade(sync_url)
            after = migrations.current(sync_url)
            DBOS.migrate(self.urls.render(self.urls.system_url))
        self._system_migrated = True
        if after != before:
            log.info("database_migrated", before=list(before), after=list(after))
        return after != before

    async def start(self, *, launch_dbos: bool = True) -> None:
        self.lock()
        self.database = Database(self.settings.database_url)
        self.providers = Providers(self.settings, self.public_url, self.integration_stats)
        self.inbox_writer = InboxWriter(self.database)
        self.inbox_writer.start()
        self.inbox = InboxProcessor(
            self.database,
            max_attempts=self.settings.webhook_max_attempts,
            backoff_s=self.settings.webhook_retry_backoff_s,
        )
        self.inbox.start()
        self.dispatcher = Dispatcher(
            self.database,
            self.providers.clients["sendgrid"],
            self.settings,
            self.public_url,
            lambda: self.clock(),
            chain=model_chain(self.providers, self.settings),
        )
        if self.settings.sequence_dispatch:
            self.dispatcher.start()
        if self.settings.dogstatsd_url:
            self.dogstatsd = DogStatsD(
                self.settings.dogstatsd_url, self.settings.dogstatsd_interval_s
            )
            self.dogstatsd.start()
        if launch_dbos:
            if not self.urls.is_sqlite:
                self.heartbeat = Heartbeat(
                    self.database,
                    self.executor_id,
                    self._recover_executor,
                    self.settings.heartbeat_interval_s,
                    self.settings.executor_dead_after_s,
                )
                await self.heartbeat.claim()
            self._launch_dbos()
            if self.heartbeat is not None:
                self.heartbeat.start()
            from roleferry.enrichment import workflows
            from roleferry.payments import jobs

            workflows.bind(self)
            await workflows.register_queue()
            jobs.wake_on_credit(self)
        for spec in SPECS:
            mode = "live" if self.settings.is_live(spec.name) else "sandbox"
            # The start-up banner sums this up; the base URLs are detail.
            log.debug(
                "provider_configured",
                provider=spec.name,
                mode=mode,
                base_url=self.settings.base_url(spec.name, self.public_url),
            )
        for problem in self.settings.webhook_secret_problems():
            # Production refuses to start (config.py); development says so loudly.
            log.warning("webhook_secret_missing", problem=problem)

    async def stop(self) -> None:
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self.dispatcher is not None:  # before DBOS, which shuts the loop's default executor
            await self.dispatcher.stop()
            self.dispatcher = None
        if self.dbos_launched:
            from dbos import DBOS

            from roleferry.payments import jobs

            await jobs.stop_waking(self)
            await asyncio.to_thread(
                DBOS.destroy, workflow_completion_timeout_sec=self.settings.shutdown_grace_s
            )
            self.dbos_launched = False
        if self.heartbeat is not None:
            await self.heartbeat.hand_back()
            self.heartbeat = None
        if self.inbox_writer is not None:
            await self.inbox_writer.stop()
            self.inbox_writer = None
        if self.inbox is not None:
            await self.inbox.stop()
            self.inbox = None
        if self.dogstatsd is not None:
            await self.dogstatsd.stop()
            self.dogstatsd = None
        if self.providers is not None:
            await self.providers.aclose()
            self.providers = None
        if self.database is not None:
            await self.database.dispose()
            self.database = None
        if self._lock is not None and self._locked:
            self._lock.release()
            self._locked = False

    async def ready(self) -> dict[str, str]:
        """What /readyz reports: each dependency's state; raises if the database is unreachable."""
        async with self.db.session() as session:
            await session.execute(text("SELECT 1"))
        return {"database": "ok", "dbos": "launched" if self.dbos_launched else "not_launched"}

    def _launch_dbos(self) -> None:
        from dbos import DBOS, DBOSConfig

        # Registered before launch: DBOS hashes the registered workflows into the application
        # version, and recovers and dequeues only workflows of its own version. Imported after
        # launch (as `worker` did), a worker had another version than `serve` and never ran
        # or recovered what `serve` queued.
        from roleferry.enrichment import workflows  # noqa: F401

        if self.urls.is_sqlite:
            Path(self.urls.system_url.database or ".").parent.mkdir(parents=True, exist_ok=True)
        config: DBOSConfig = {
            "name": "roleferry",
            "system_database_url": self.urls.render(self.urls.system_url),
            "log_level": self.settings.log_level.upper(),
            # DBOS's default is 1 s. Shorter wakes recv/events sooner and stops faster (tests
            # use 0.05 s); each poll is a query, so the default here stays at 0.5 s.
            "notification_listener_polling_interval_sec": self.settings.dbos_poll_s,
            "executor_id": self.executor_id,
            # Migrated under our lock by migrate(); then DBOS only checks.
            "run_migrations": not self._system_migrated,
        }
        route_dbos_logs()
        DBOS(config=config)
        DBOS.launch()
        self.dbos_launched = True

    def _executor_id(self) -> str:
        """DBOS's executor id: set, or DBOS's own DBOS__VMID, or on SQLite (one process by
        the lock) 'local', so a restart recovers what the last run left; on PostgreSQL one
        per process start, so a restarted process never recovers what live ones run."""
        chosen = self.settings.executor_id or os.environ.get("DBOS__VMID")
        if chosen:
            return chosen
        return "local" if self.urls.is_sqlite else new_executor_id()

    async def _recover_executor(self, executor_id: str) -> int:
        from dbos import DBOS

        handles = await asyncio.to_thread(DBOS._recover_pending_workflows, [executor_id])
        return len(handles)
