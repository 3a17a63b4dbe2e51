"""A fast check before a run: the teacher is reachable, the key is accepted, the model exists."""

from __future__ import annotations

from tasks.core.errors import UserError
from tasks.teacher.config import TeacherConfig
from tasks.teacher.credentials import auth_error, resolve_api_key


def preflight(cfg: TeacherConfig, timeout_s: float = 10.0) -> None:
    """A fast check before a run: reachable, key present and accepted, model known.

    GET /models answers the first three. A model missing from that list is probed with one
    1-token completion, since some servers (llama.cpp) list an alias but serve any name.
    Raises UserError (one line) on failure.
    """
    import openai

    key = resolve_api_key(cfg)
    client = openai.OpenAI(base_url=cfg.base_url, api_key=key or "EMPTY", max_retries=0, timeout=timeout_s)
    try:
        try:
            listed = {m.id for m in client.models.list().data}
        except openai.NotFoundError:
            listed = set()  # a proxy without /models: the probe decides
        if cfg.model in listed:
            return
        client.chat.completions.create(
            model=cfg.model, messages=[{"role": "user", "content": "ping"}], max_tokens=1, temperature=0
        )
    except openai.AuthenticationError:
        raise auth_error(cfg) from None
    except openai.NotFoundError:
        raise UserError(f"the teacher at {cfg.base_url} has no model {cfg.model!r} (HTTP 404)") from None
    except openai.APITimeoutError:
        raise UserError(f"the teacher at {cfg.base_url} did not answer within {timeout_s:g} s") from None
    except openai.APIConnectionError:
        raise UserError(f"the teacher at {cfg.base_url} is unreachable (connection failed)") from None
    except openai.BadRequestError:
        return  # the server knows the model; it only disliked the 1-token probe
    except openai.APIStatusError as exc:
        raise UserError(f"the teacher at {cfg.base_url} answered HTTP {exc.status_code} to a preflight request") from None
    finally:
        client.close()
