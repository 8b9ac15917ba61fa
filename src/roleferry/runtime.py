"""What one roleferry process owns: settings, the database, DBOS, and on SQLite the lock
that keeps it the only process. Built by the CLI (or a test), started by the app's lifespan."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from sqlalchemy import text

from roleferry import migrations
from roleferry.config import Settings
from roleferry.db import Database, DatabaseUrls
from roleferry.monitoring.integrations import IntegrationStats
from roleferry.outreach.dispatch import Dispatcher
from roleferry.process_lock import ProcessLock
from roleferry.providers.catalog import SPECS
from roleferry.providers.registry import Providers
from roleferry.webhooks.inbox import InboxWriter
from roleferry.webhooks.processor import InboxProcessor

log = structlog.get_logger(__name__)


class Runtime:
    def __init__(self, settings: Settings, server_url: str = "http://127.0.0.1:8000") -> None:
        self.settings = settings
        self.server_url = server_url.rstrip("/")
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
        self.inbox: InboxProcessor | None = None
        self.inbox_writer: InboxWriter | None = None
        self.dbos_launched = False
        self.dispatcher: Dispatcher | None = None
        self.clock: Callable[[], float] = time.time

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

    def migrate(self) -> None:
        self.urls.ensure_directory()
        migrations.upgrade(self.urls.render(self.urls.sync_url))

    async def start(self, *, launch_dbos: bool = True) -> None:
        self.lock()
        self.database = Database(self.settings.database_url)
        self.providers = Providers(self.settings, self.public_url, self.integration_stats)
        self.inbox_writer = InboxWriter(self.database)
        self.inbox_writer.start()
        self.inbox = InboxProcessor(self.database)
        self.inbox.start()
        self.dispatcher = Dispatcher(
            self.database,
            self.providers.clients["sendgrid"],
            self.settings,
            self.public_url,
            lambda: self.clock(),
        )
        if self.settings.sequence_dispatch:
            self.dispatcher.start()
        if launch_dbos:
            self._launch_dbos()
            from roleferry.enrichment import workflows

            workflows.bind(self)
            await workflows.register_queue()
        for spec in SPECS:
            mode = "live" if self.settings.is_live(spec.name) else "sandbox"
            log.info(
                "provider_configured",
                provider=spec.name,
                mode=mode,
                base_url=self.settings.base_url(spec.name, self.public_url),
            )

    async def stop(self) -> None:
        if self.dbos_launched:
            from dbos import DBOS

            DBOS.destroy()
            self.dbos_launched = False
        if self.dispatcher is not None:
            await self.dispatcher.stop()
            self.dispatcher = None
        if self.inbox_writer is not None:
            await self.inbox_writer.stop()
            self.inbox_writer = None
        if self.inbox is not None:
            await self.inbox.stop()
            self.inbox = None
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

        if self.urls.is_sqlite:
            Path(self.urls.system_url.database or ".").parent.mkdir(parents=True, exist_ok=True)
        config: DBOSConfig = {
            "name": "roleferry",
            "system_database_url": self.urls.render(self.urls.system_url),
            "log_level": self.settings.log_level.upper(),
            # DBOS's default is 1 s. Shorter wakes recv/events sooner and stops faster (tests
            # use 0.05 s); each poll is a query, so the default here stays at 0.5 s.
            "notification_listener_polling_interval_sec": self.settings.dbos_poll_s,
        }
        DBOS(config=config)
        _route_dbos_logs_through_ours()
        DBOS.launch()
        self.dbos_launched = True


def _route_dbos_logs_through_ours() -> None:
    """DBOS installs its own handler; drop it so its records go through our redacting one."""
    dbos_logger = logging.getLogger("dbos")
    dbos_logger.handlers[:] = []
    dbos_logger.propagate = True
