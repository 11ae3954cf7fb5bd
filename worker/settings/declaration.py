"""The declaration: every setting, one ``Field`` each, with its rules and its meaning."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker.settings.loading import GivenVariables, SettingsError, build, given_variables

#: The embedded default is the demo's database, in the folder where `recon demo` (`make demo`)
#: keeps everything it leaves behind; `recon audit ...` run from the same folder reads it.
DEFAULT_DATABASE_URL = "sqlite:///recon-demo/recon.sqlite3"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
# One row per request of the window (worker/budget/limiter.py): bounded, far above any documented
# limit (1000 per minute; 100 on demo clusters).
MAX_RATE_LIMIT_PER_MINUTE = 100_000
#: A key this long cannot be guessed; a shorter one would make the keyed digest guessable again.
MIN_DIGEST_KEY_CHARS = 32


class Settings(BaseSettings):
    """The product's configuration. Secrets are ``SecretStr``: their repr is masked."""

    # Names are exact (RECON_LOG_LEVEL, not recon_log_level) and an empty variable means "unset",
    # as a shell or systemd leaves it. Only the environment is read: no .env file is loaded
    # behind the operator's back.
    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,
        env_ignore_empty=True,
        populate_by_name=True,
        # Each field's docstring is its description: the README and .env.example show it.
        use_attribute_docstrings=True,
    )

    database_url: str = Field(DEFAULT_DATABASE_URL, alias="RECON_DATABASE_URL", min_length=1)
    """SQLAlchemy URL of the database (PostgreSQL in production; `postgresql://` is driven by
    psycopg 3; the default is the demo's); a primary with a standby is named by all its hosts,
    as libpq writes them, with `target_session_attrs=read-write`:
    `postgresql://user:password@db1:5432,db2:5432/recon?target_session_attrs=read-write`
    """

    broker_url: str = Field(DEFAULT_BROKER_URL, alias="RECON_BROKER_URL", min_length=1)
    """AMQP URL of RabbitMQ; for a cluster, every node's URL separated by `;` (the next one is
    used when a node goes away)"""

    events_exchange: str = Field("orders", alias="RECON_EVENTS_EXCHANGE", min_length=1)
    """topic exchange the order systems publish to"""

    events_queue: str = Field("recon.events", alias="RECON_EVENTS_QUEUE", min_length=1)
    """durable queue the intake consumer reads"""

    max_attempts: int = Field(5, alias="RECON_MAX_ATTEMPTS", ge=1, le=50)
    """attempts per item before it is `gave_up` (transient failures)"""

    backfill_cron: str = Field("0 2 * * *", alias="RECON_BACKFILL_CRON", min_length=9)
    """crontab (UTC) of the nightly backfill"""

    sweep_interval_seconds: int = Field(120, alias="RECON_SWEEP_INTERVAL_SECONDS", ge=5)
    """how often the sweeper looks for stuck work"""

    sweep_after_seconds: int = Field(300, alias="RECON_SWEEP_AFTER_SECONDS", ge=10)
    """how long work may stay pending before the sweeper re-enqueues it"""

    retry_base_seconds: int = Field(2, alias="RECON_RETRY_BASE_SECONDS", ge=1, le=600)
    """first retry delay; doubles each attempt, full jitter, capped at 600 s"""

    delivery_limit: int = Field(10, alias="RECON_DELIVERY_LIMIT", ge=1, le=1000)
    """times a message may return to a queue (consumer crashed, worker killed while holding it)
    before it is dead-lettered to `recon.dead`
    """

    intake_batch_size: int = Field(200, alias="RECON_INTAKE_BATCH_SIZE", ge=1, le=2000)
    """events the intake stores in one transaction and acknowledges with one ack (it fetches
    twice as many ahead)
    """

    intake_flush_ms: int = Field(20, alias="RECON_INTAKE_FLUSH_MS", ge=1, le=1000)
    """longest a partial batch waits for more events before the intake stores it, in
    milliseconds
    """

    orders_per_task: int = Field(10, alias="RECON_ORDERS_PER_TASK", ge=1, le=100)
    """orders the intake hands to one reconcile task when a batch made several ready (`1`: a
    task per order); a task's own cost (its message, its events, its hand-over to a pool process)
    is then paid once for them all
    """

    worker_max_memory_mb: int = Field(130, alias="RECON_WORKER_MAX_MEMORY_MB", ge=0, le=100_000)
    """a pool process whose resident memory passed this many MB is replaced by a fresh one after
    its current task (Celery's `worker_max_memory_per_child`; `0`: never)
    """

    log_level: str = Field("INFO", alias="RECON_LOG_LEVEL", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    """`DEBUG`, `INFO`, `WARNING` or `ERROR`, in any case (unset, a command that prints a report
    logs only warnings on a terminal: see "The CLI")
    """

    task_events: bool = Field(True, alias="RECON_TASK_EVENTS")
    """send Celery task events, so Flower and `celery events` show every task; `false` turns them
    off
    """

    loyalty_api_url: str = Field(
        "http://127.0.0.1:8780", alias="LOYALTY_API_URL", pattern=r"^https?://"
    )
    """base URL of the loyalty platform"""

    loyalty_api_username: str = Field("", alias="LOYALTY_API_USERNAME")
    """till username for Basic auth"""

    loyalty_api_password: SecretStr = Field(SecretStr(""), alias="LOYALTY_API_PASSWORD")
    """till password (sent MD5-hashed as the platform requires; never logged)"""

    loyalty_client_key: str = Field("", alias="LOYALTY_API_CLIENT_KEY")
    """OAuth client key (OAuth replaces Basic when set)"""

    loyalty_client_secret: SecretStr = Field(SecretStr(""), alias="LOYALTY_API_CLIENT_SECRET")
    """OAuth client secret (never logged)"""

    loyalty_brand_id: int | None = Field(None, alias="LOYALTY_BRAND_ID", ge=1)
    """brand id for vendor redemption configurations (`recon vendor push`)"""

    rate_limit_per_minute: int = Field(
        1000, alias="LOYALTY_RATE_LIMIT_PER_MINUTE", ge=1, le=MAX_RATE_LIMIT_PER_MINUTE
    )
    """requests per minute per API key, shared by all workers on all hosts (at most 100,000: the
    limiter keeps one row per request of the window)
    """

    rate_limit_burst: int | None = Field(None, alias="LOYALTY_RATE_LIMIT_BURST", ge=1)
    """most requests sent at once (unset: the whole per-minute budget); a smaller value smooths, for
    platforms that throttle bursts (never more than the per-minute limit in any 60 s window
    either way)
    """

    backfill_budget_share: float = Field(0.5, alias="RECON_BACKFILL_BUDGET_SHARE", ge=0, le=1)
    """share of the budget re-driven work (backfill, sweeper) may use in a window in which live work
    had to wait; with no live work waiting it may use all of it
    """

    http_timeout_seconds: float = Field(10.0, alias="LOYALTY_HTTP_TIMEOUT_SECONDS", gt=0, le=120)
    """read time-out of one call to the platform"""

    metrics_port: int | None = Field(None, alias="RECON_METRICS_PORT", ge=0, le=65535)
    """port of `/metrics` for this `recon worker` or `recon beat` (unset: not served); each instance
    on a host needs its own; `0` lets the OS pick one, which the start-up banner and a target file
    in `RECON_METRICS_DIR` name (see Metrics)
    """

    metrics_host: str = Field("127.0.0.1", alias="RECON_METRICS_HOST", min_length=1)
    """address `/metrics` binds to (`0.0.0.0` to let a Prometheus on another host scrape)"""

    metrics_dir: str = Field("", alias="RECON_METRICS_DIR")
    """where each `recon worker` makes its own fresh multiprocess metrics directory, and where each
    worker and beat writes the Prometheus target file that says where it serves (unset: the
    system's temp directory)
    """

    unmatched_after_seconds: int = Field(86400, alias="RECON_UNMATCHED_AFTER_SECONDS", ge=60)
    """age after which a redemption still without a bill counts in `recon_unmatched_redemptions`"""

    web_token: SecretStr = Field(SecretStr(""), alias="RECON_WEB_TOKEN")
    """token `recon web` requires (bearer header or sign-in form); unset = none"""

    web_secure_cookies: bool = Field(False, alias="RECON_WEB_SECURE_COOKIES")
    """mark `recon web`'s session cookie `Secure`: set it when the page is served over HTTPS
    (behind a trusted proxy that sends `X-Forwarded-Proto: https` it is marked anyway)
    """

    web_trusted_proxies: int = Field(0, alias="RECON_WEB_TRUSTED_PROXIES", ge=0, le=5)
    """number of reverse proxies in front of `recon web` whose `X-Forwarded-For` and
    `X-Forwarded-Proto` it believes (werkzeug's `ProxyFix`); with `0` those headers are ignored,
    so a client cannot pick its own address for the sign-in limit
    """

    # A PostgreSQL role name (letters, digits, _ and $): it is written into GRANT statements.
    database_service_role: str = Field(
        "", alias="RECON_DATABASE_SERVICE_ROLE", pattern=r"^([A-Za-z_][A-Za-z0-9_$]{0,62})?$"
    )
    """PostgreSQL role the service (worker, beat, web, CLI) runs as; `recon migrate`, run as the
    migration role, grants it its privileges and checks them (see "Database roles")
    """

    vendor_digest_key: SecretStr = Field(SecretStr(""), alias="RECON_VENDOR_DIGEST_KEY")
    """secret key (at least 32 characters) of the digests `recon vendor push` stores of the
    configurations it sent; needed when they hold `apiHeaders` values"""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment alone (no .env file, no secrets directory), or, for load_settings(env),
        # the variables it was given in place of the process's own.
        given = given_variables.get()
        environment = env_settings if given is None else GivenVariables(settings_cls, given)
        return (init_settings, environment)

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, value: str) -> str:
        # Found here, the message names the variable; found by SQLAlchemy later, a traceback.
        from models.session import database_url_problem

        problem = database_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url_parses(cls, value: str) -> str:
        from kombu.transport import TRANSPORT_ALIASES

        # Several nodes of a cluster are kombu's failover list: URLs separated by ";".
        for url in value.split(";"):
            scheme = url.strip().split("://", 1)[0] if "://" in url else ""
            if scheme not in TRANSPORT_ALIASES:
                raise ValueError(
                    "not a broker URL (example: amqp://user:password@host:5672//, or several "
                    "nodes of a cluster separated by ';')"
                )
        return value

    @field_validator("vendor_digest_key")
    @classmethod
    def _digest_key_is_long(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value()) < MIN_DIGEST_KEY_CHARS:
            raise ValueError(
                f"shorter than {MIN_DIGEST_KEY_CHARS} characters: use a long random value "
                "(openssl rand -hex 32)"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: Any) -> Any:
        # `debug` and `DEBUG` mean the same to people; logging wants upper case.
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def uses_oauth(self) -> bool:
        return bool(self.loyalty_client_key)

    @property
    def api_key(self) -> str:
        """The identity the platform's rate limit is counted against."""
        return self.loyalty_client_key or self.loyalty_api_username

    def require_credentials(self) -> None:
        """Fail with a readable message when no way to authenticate is configured."""
        if self.uses_oauth:
            if not self.loyalty_client_secret.get_secret_value():
                raise SettingsError(
                    "LOYALTY_API_CLIENT_SECRET is not set, but LOYALTY_API_CLIENT_KEY is: "
                    "OAuth needs both"
                )
            return
        if not self.loyalty_api_username:
            raise SettingsError(
                "LOYALTY_API_USERNAME is not set: set it (with LOYALTY_API_PASSWORD) for Basic "
                "auth, or LOYALTY_API_CLIENT_KEY and LOYALTY_API_CLIENT_SECRET for OAuth"
            )
        if not self.loyalty_api_password.get_secret_value():
            raise SettingsError("LOYALTY_API_PASSWORD is not set: Basic auth needs it")

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (by attribute name), checked by the same rules."""
        return build(Settings, {**dict(self), **changes}, variables={})


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: the process environment)."""
    return build(Settings, {}, variables=env)
