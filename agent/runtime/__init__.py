"""The agent's runtime: the pump that takes messages off the bus, hands them to the core, stores and publishes what
came of them, and acknowledges them (:mod:`agent.runtime.pump`).

Beside it, by concern: how it runs and what it counts (:mod:`~agent.runtime.settings`), the instance-id claim at
start (:mod:`~agent.runtime.claim`), the timing of a pump turn (:mod:`~agent.runtime.pacing`), the core's snapshots
(:mod:`~agent.runtime.snapshots`), the retained contexts (:mod:`~agent.runtime.contexts`), devices' heartbeats
(:mod:`~agent.runtime.liveness`) and encodings (:mod:`~agent.runtime.languages`), refused messages
(:mod:`~agent.runtime.refusals`), utterances held for the LLM resolver (:mod:`~agent.runtime.llm_hold`), what is
stored (:mod:`~agent.runtime.rows`) and who waits on an answer (:mod:`~agent.runtime.interactive`).
"""

from agent.runtime.claim import InstanceTaken
from agent.runtime.pump import AgentRuntime
from agent.runtime.settings import VERSION, AgentSettings, AgentStats

__all__ = ["VERSION", "AgentRuntime", "AgentSettings", "AgentStats", "InstanceTaken"]
