//! The Lua scripts (in `scripts/`), loaded once per process. `redis::Script` runs them with
//! EVALSHA and reloads them after a Redis restart flushed the script cache.

use std::sync::LazyLock;

use redis::Script;

pub(crate) struct Scripts {
    pub enqueue: Script,
    pub promote: Script,
    pub ack: Script,
    pub settle: Script,
    pub reclaim: Script,
    pub trim: Script,
    pub prune: Script,
    pub redrive: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(include_str!("scripts/enqueue.lua")),
    promote: Script::new(include_str!("scripts/promote.lua")),
    ack: Script::new(include_str!("scripts/ack.lua")),
    settle: Script::new(include_str!("scripts/settle.lua")),
    reclaim: Script::new(include_str!("scripts/reclaim.lua")),
    trim: Script::new(include_str!("scripts/trim.lua")),
    prune: Script::new(include_str!("scripts/prune.lua")),
    redrive: Script::new(include_str!("scripts/redrive.lua")),
});
