"""An optional resolver for sentences the built-in parser does not understand: an OpenAI-compatible chat endpoint
with tool calls (a Qwen model behind vLLM, or a hosted API). Off by default.

It sits behind the same interface as the deterministic parser: it returns an
:class:`~agent.core.intents.Intent` (or ``None``), and the runtime hands that to the core as a hint for that
utterance. The skills and their slots are offered to the model as tools; the model picks one and fills what the
sentence says. Anything that goes wrong (timeout, HTTP error, no tool call, an unknown skill) gives ``None``, and
the user hears the usual "sorry, I didn't get that": the network never blocks or breaks the agent.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from agent.core.intents import Intent, Skill, detect_lang
from broker.logs import get_logger
from schemas.errors import ConfigError, ResolverError

SLOTS: dict[Skill, dict[str, str]] = {
    Skill.ORDER_FOOD: {"dish": "what to order", "restaurant": "where from", "address": "home, office or an address",
                       "budget": "the most to spend"},
    Skill.HAIL_RIDE: {"destination": "where to", "pickup": "where from", "delay_min": "minutes from now"},
    Skill.NAVIGATE: {"destination": "where to", "mode": "walk, bike, drive or transit"},
    Skill.TRANSLATE: {"target_lang": "language code to translate into", "mode": "conversation, caption or photo"},
    Skill.TELEPROMPTER: {"script": "the script's name"},
    Skill.CAPTURE: {"kind": "photo or video", "duration_s": "seconds of video"},
    Skill.REMIND: {"text": "what to remind", "delay_min": "minutes from now", "at": "HH:MM"},
    Skill.HEALTH_QUERY: {"metric": "sleep, hr, spo2, hrv, stress, temp or steps", "measure": "1 to measure now"},
    Skill.MUSIC: {"query": "what to play", "action": "play, pause, next or previous"},
}  # fmt: skip


def tools() -> list[dict[str, Any]]:
    """The skills as OpenAI tool definitions."""
    return [
        {
            "type": "function",
            "function": {
                "name": skill.value,
                "description": f"The user wants: {skill.value.replace('_', ' ')}.",
                "parameters": {
                    "type": "object",
                    "properties": {name: {"type": "string", "description": doc} for name, doc in slots.items()},
                },
            },
        }
        for skill, slots in SLOTS.items()
    ]


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    """Where the model is.

    Attributes:
        url: the base URL of an OpenAI-compatible API (``http://127.0.0.1:8000/v1`` for vLLM).
        model: the model name.
        api_key: a bearer token, if the endpoint wants one.
        timeout_s: how long one request may take.
    """

    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 3.0


class ChatResolver:
    """Resolves a sentence to an intent with one chat-completions request with tools."""

    def __init__(self, config: ResolverConfig) -> None:
        self.config = config
        self.log = get_logger("llm", model=config.model)

    def request(self, text: str, lang: str) -> dict[str, Any]:
        """The request body (for tests and logs)."""
        return {
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": "You route one sentence a wearable's user said to one tool. "
                 "Fill only what the sentence says. If no tool fits, answer without a tool call."},
                {"role": "user", "content": text},
            ],
            "tools": tools(),
            "tool_choice": "auto",
            "temperature": 0,
        }  # fmt: skip

    async def resolve(self, text: str, lang: str | None = None) -> Intent | None:
        """An intent for the sentence, or None."""
        lang = lang or detect_lang(text)
        try:
            async with asyncio.timeout(self.config.timeout_s + 1):
                reply = await asyncio.to_thread(self._post, self.request(text, lang))
        except (TimeoutError, ResolverError, ConfigError) as exc:
            self.log.warning("llm_unavailable", error=str(exc))
            return None
        return parse_reply(reply, text, lang)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST the request; the reply's JSON.

        Raises:
            ConfigError: the URL is not http(s).
            ResolverError: the endpoint did not answer, answered with an HTTP error, or not with JSON.
        """
        url = self.config.url.rstrip("/") + "/chat/completions"
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"the LLM URL must be http(s): {url}")
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:  # noqa: S310 (checked above)
                data: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ResolverError(f"HTTP {exc.code} from {url}") from exc
        except OSError as exc:  # no connection, a timeout (socket.timeout is an OSError)
            raise ResolverError(f"{url}: {exc}") from exc
        except ValueError as exc:  # not JSON
            raise ResolverError(f"{url} did not answer with JSON: {exc}") from exc
        return data


def parse_reply(reply: dict[str, Any], text: str, lang: str) -> Intent | None:
    """The intent in a chat-completions reply (its first tool call), or None."""
    try:
        call = reply["choices"][0]["message"]["tool_calls"][0]["function"]
        skill = Skill(call["name"])
        raw = call.get("arguments") or "{}"
        args = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if skill not in SLOTS or not isinstance(args, dict):
        return None
    allowed = SLOTS[skill]
    slots: dict[str, str | int | float] = {}
    for key, value in args.items():
        if key not in allowed or value in (None, ""):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            slots[key] = value
        else:
            text_value = str(value)[:120]
            slots[key] = int(text_value) if text_value.isdigit() else text_value
    return Intent(skill=skill, slots=slots, lang=lang, text=text)
