"""Settings: environment variables with safe defaults, read once by a function (never at import).

Every setting the product reads is listed in ``ENV_VARS``; the README's configuration table and
the compose test are checked against it. A bad value raises ``SettingsError`` naming the variable,
the value's problem and what is expected, never the value of a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

#: The embedded default is the demo's database, in the folder where `recon demo` (`make demo`)
#: keeps everything it leaves behind; `recon audit ...` run from the same folder reads it.
DEFAULT_DATABASE_URL = "sqlite:///recon-demo/recon.sqlite3"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
MAX_RATE_LIMIT_PER_MINUTE = 100_000
#: A key this long cannot be guessed; a shorter one would make the keyed digest guessable again.
MIN_DIGEST_KEY_CHARS = 32


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class _EnvModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    database_url: str = Field(DEFAULT_DATABASE_URL, alias="RECON_DATABASE_URL", min_length=1)
    broker_url: str = Field(DEFAULT_BROKER_URL, alias="RECON_BROKER_URL", min_length=1)
    events_exchange: str = Field("orders", alias="RECON_EVENTS_EXCHANGE", min_length=1)
    events_queue: str = Field("recon.events", alias="RECON_EVENTS_QUEUE", min_length=1)
    max_attempts: int = Field(5, alias="RECON_MAX_ATTEMPTS", ge=1, le=50)
    backfill_cron: str = Field("0 2 * * *", alias="RECON_BACKFILL_CRON", min_length=9)
    sweep_interval_seconds: int = Field(120, alias="RECON_SWEEP_INTERVAL_SECONDS", ge=5)
    sweep_after_seconds: int = Field(300, alias="RECON_SWEEP_AFTER_SECONDS", ge=10)
    retry_base_seconds: int = Field(2, alias="RECON_RETRY_BASE_SECONDS", ge=1, le=600)
    delivery_limit: int = Field(10, alias="RECON_DELIVERY_LIMIT", ge=1, le=1000)
    log_level: str = Field("INFO", alias="RECON_LOG_LEVEL", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    loyalty_api_url: str = Field(
        "http://127.0.0.1:8780", alias="LOYALTY_API_URL", pattern=r"^https?://"
    )
    loyalty_api_username: str = Field("", alias="LOYALTY_API_USERNAME")
    loyalty_api_password: SecretStr = Field(SecretStr(""), alias="LOYALTY_API_PASSWORD")
    loyalty_client_key: str = Field("", alias="LOYALTY_API_CLIENT_KEY")
    loyalty_client_secret: SecretStr = Field(SecretStr(""), alias="LOYALTY_API_CLIENT_SECRET")
    loyalty_brand_id: int | None = Field(None, alias="LOYALTY_BRAND_ID", ge=1)
    # One row per request of the window (worker/budget/limiter.py): bounded, far above any
    # documented limit (1000 per minute; 100 on demo clusters).
    rate_limit_per_minute: int = Field(
        1000, alias="LOYALTY_RATE_LIMIT_PER_MINUTE", ge=1, le=MAX_RATE_LIMIT_PER_MINUTE
    )
    rate_limit_burst: int | None = Field(None, alias="LOYALTY_RATE_LIMIT_BURST", ge=1)
    backfill_budget_share: float = Field(0.5, alias="RECON_BACKFILL_BUDGET_SHARE", ge=0, le=1)
    http_timeout_seconds: float = Field(10.0, alias="LOYALTY_HTTP_TIMEOUT_SECONDS", gt=0, le=120)
    metrics_port: int | None = Field(None, alias="RECON_METRICS_PORT", ge=0, le=65535)
    metrics_host: str = Field("127.0.0.1", alias="RECON_METRICS_HOST", min_length=1)
    metrics_dir: str = Field("", alias="RECON_METRICS_DIR")
    unmatched_after_seconds: int = Field(86400, alias="RECON_UNMATCHED_AFTER_SECONDS", ge=60)
    web_token: SecretStr = Field(SecretStr(""), alias="RECON_WEB_TOKEN")
    task_events: bool = Field(True, alias="RECON_TASK_EVENTS")
    # A PostgreSQL role name (letters, digits, _ and $): it is written into GRANT statements.
    database_service_role: str = Field(
        "", alias="RECON_DATABASE_SERVICE_ROLE", pattern=r"^([A-Za-z_][A-Za-z0-9_$]{0,62})?$"
    )
    web_secure_cookies: bool = Field(False, alias="RECON_WEB_SECURE_COOKIES")
    web_trusted_proxies: int = Field(0, alias="RECON_WEB_TRUSTED_PROXIES", ge=0, le=5)
    vendor_digest_key: SecretStr = Field(SecretStr(""), alias="RECON_VENDOR_DIGEST_KEY")

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, value: str) -> str:
        # Found here, the message names the variable; found by SQLAlchemy later, a traceback.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        from models.session import normalise_url

        try:
            url = make_url(normalise_url(value))
            dialect = url.get_dialect()
        except (ArgumentError, NoSuchModuleError, ValueError):
            raise ValueError(
                "not a database URL SQLAlchemy can use (examples: "
                "postgresql://user:password@host:5432/recon, sqlite:///recon.sqlite3)"
            ) from None
        if url.get_backend_name() not in ("postgresql", "sqlite"):
            raise ValueError(
                f"{url.get_backend_name()} is not supported: use PostgreSQL "
                "(postgresql://user:password@host:5432/recon) or SQLite for the demo"
            )
        try:
            dialect.import_dbapi()
        except ImportError:
            raise ValueError(
                f"the driver {url.get_driver_name()!r} is not installed: leave the driver out "
                "(postgresql://...) to use psycopg 3, which is"
            ) from None
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url_parses(cls, value: str) -> str:
        from kombu.transport import TRANSPORT_ALIASES

        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in TRANSPORT_ALIASES:
            raise ValueError("not a broker URL (example: amqp://user:password@host:5672//)")
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


#: variable name -> one-line description, in README order.
ENV_VARS: dict[str, str] = {
    "RECON_DATABASE_URL": "SQLAlchemy URL of the database (PostgreSQL in production)",
    "RECON_BROKER_URL": "AMQP URL of RabbitMQ",
    "RECON_EVENTS_EXCHANGE": "topic exchange the order systems publish to",
    "RECON_EVENTS_QUEUE": "durable queue the intake consumer reads",
    "RECON_MAX_ATTEMPTS": "attempts per item before it is gave_up (transient failures)",
    "RECON_BACKFILL_CRON": "crontab (UTC) of the nightly backfill",
    "RECON_SWEEP_INTERVAL_SECONDS": "how often the sweeper looks for stuck work",
    "RECON_SWEEP_AFTER_SECONDS": "how long work may stay pending before the sweeper re-enqueues it",
    "RECON_RETRY_BASE_SECONDS": "first retry delay; doubles each attempt, jittered, capped at 600",
    "RECON_DELIVERY_LIMIT": "times a message may come back to a queue before it is dead-lettered",
    "RECON_LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR (any case)",
    "LOYALTY_API_URL": "base URL of the loyalty platform",
    "LOYALTY_API_USERNAME": "till username for Basic auth",
    "LOYALTY_API_PASSWORD": "till password (sent MD5-hashed, never logged)",
    "LOYALTY_API_CLIENT_KEY": "OAuth client key (OAuth replaces Basic when set)",
    "LOYALTY_API_CLIENT_SECRET": "OAuth client secret (never logged)",
    "LOYALTY_BRAND_ID": "brand id for vendor redemption configurations",
    "LOYALTY_RATE_LIMIT_PER_MINUTE": "requests per minute per API key, shared by all workers "
    "(at most 100,000)",
    "LOYALTY_RATE_LIMIT_BURST": "most requests sent at once (default: the whole per-minute budget)",
    "RECON_BACKFILL_BUDGET_SHARE": "share of the budget backfill/sweeper work may use while live "
    "work waits",
    "LOYALTY_HTTP_TIMEOUT_SECONDS": "read time-out of one call to the platform",
    "RECON_METRICS_PORT": "port of /metrics for this recon worker or beat (unset: not served)",
    "RECON_METRICS_HOST": "address /metrics binds to",
    "RECON_METRICS_DIR": "where each worker makes its fresh multiprocess metrics directory",
    "RECON_UNMATCHED_AFTER_SECONDS": "age after which a redemption without a bill is unmatched",
    "RECON_WEB_TOKEN": "token `recon web` requires (bearer header or sign-in form); unset = none",
    "RECON_TASK_EVENTS": "send Celery task events (Flower, `celery events`); false turns them off",
    "RECON_DATABASE_SERVICE_ROLE": "PostgreSQL role the service runs as; `recon migrate` grants "
    "it its privileges and checks them (unset: no grants)",
    "RECON_WEB_SECURE_COOKIES": "mark `recon web`'s session cookie Secure (the page is served "
    "over HTTPS)",
    "RECON_WEB_TRUSTED_PROXIES": "number of reverse proxies in front of `recon web` whose "
    "X-Forwarded-* headers it trusts (0: none)",
    "RECON_VENDOR_DIGEST_KEY": "secret key of the stored digests of vendor configurations "
    "(needed by `recon vendor push` when they hold apiHeaders values)",
}

_ALIAS_TO_FIELD = {f.alias: name for name, f in _EnvModel.model_fields.items()}
assert set(_ALIAS_TO_FIELD) == set(ENV_VARS), "ENV_VARS and the settings model drifted"


@dataclass(frozen=True)
class Settings:
    """The product's configuration. Secrets are ``SecretStr``: their repr is masked."""

    database_url: str
    broker_url: str
    events_exchange: str
    events_queue: str
    max_attempts: int
    backfill_cron: str
    sweep_interval_seconds: int
    sweep_after_seconds: int
    retry_base_seconds: int
    delivery_limit: int
    log_level: str
    loyalty_api_url: str
    loyalty_api_username: str
    loyalty_api_password: SecretStr
    loyalty_client_key: str
    loyalty_client_secret: SecretStr
    loyalty_brand_id: int | None
    rate_limit_per_minute: int
    rate_limit_burst: int | None
    backfill_budget_share: float
    http_timeout_seconds: float
    metrics_port: int | None
    metrics_host: str
    metrics_dir: str
    unmatched_after_seconds: int
    web_token: SecretStr
    vendor_digest_key: SecretStr
    task_events: bool = True
    database_service_role: str = ""
    web_secure_cookies: bool = False
    web_trusted_proxies: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

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
        values = {name: getattr(self, name) for name in _EnvModel.model_fields}
        values.update(changes)
        for name in (
            "loyalty_api_password",
            "loyalty_client_secret",
            "web_token",
            "vendor_digest_key",
        ):
            if isinstance(values[name], str):
                values[name] = SecretStr(values[name])
        return Settings(**values)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: the process environment)."""
    source = os.environ if env is None else env
    raw = {alias: source[alias] for alias in ENV_VARS if source.get(alias, "") != ""}
    try:
        model = _EnvModel.model_validate(raw)
    except ValidationError as exc:
        # `from None`: pydantic's own text quotes the input, which may be a password.
        raise SettingsError(_describe(exc)) from None
    return Settings(**{name: getattr(model, name) for name in _EnvModel.model_fields})


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        alias = str(error["loc"][0]) if error["loc"] else "?"
        problems.append(f"{alias}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid configuration: " + "; ".join(problems)
