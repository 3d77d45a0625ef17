//! Rate limiting: every limit a verification spends is checked, and spent,
//! all together or not at all.
//!
//! - **Redis** (`--redis-url`): one server-side script checks and spends
//!   every limit of a request atomically, shared by all nodes: exact, no
//!   overshoot under any concurrency. Should Redis stop answering, the node
//!   limits locally until it answers again (logged, and `/readyz` says so).
//! - **Local** (no Redis): each node counts in its own memory; with several
//!   nodes each admits up to the limit.
//!
//! Both run the arithmetic of [`keyward_core::ratelimit`]: no window ever
//! holds more than the limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyward_core::ratelimit::{LimitState, RateLimit, Window};

/// One limit a request spends: whose counter, the limit and the units.
#[derive(Debug, Clone)]
pub struct Check<'a> {
    /// `kw:rl:<k|i>:<key or identity id>:<name>:<duration>`: a change of
    /// duration starts a fresh counter.
    counter: String,
    pub limit: &'a RateLimit,
    pub cost: i64,
}

impl<'a> Check<'a> {
    /// A limit of a key (`owner` `k`) or of an identity (`i`).
    pub fn new(owner: char, owner_id: &str, limit: &'a RateLimit, cost: i64) -> Self {
        Check { counter: format!("kw:rl:{owner}:{owner_id}:{}:{}", limit.name, limit.duration_ms), limit, cost }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Every limit had room: all were spent. Otherwise none was.
    pub admitted: bool,
    /// Per check, in order.
    pub states: Vec<LimitState>,
    /// Per check, the slot its units went to (for a refund).
    slots: Vec<i64>,
}

/// Local counters held at most (one per key or identity and limit that is
/// in use); idle ones are dropped first.
pub const LOCAL_CAPACITY: usize = 1_000_000;

/// Redis calls wait this long at most; then the node limits locally.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Limiter {
    /// Each counter's window, with its duration (ms).
    local: Mutex<HashMap<String, (i64, Window)>>,
    redis: Option<Redis>,
}

struct Redis {
    conn: redis::aio::ConnectionManager,
    spend: redis::Script,
    refund: redis::Script,
    /// The last call failed: limiting locally meanwhile.
    down: AtomicBool,
    /// When Redis was last tried while down (ms since `started`): while it
    /// is away, verifications ask it again at most every [`RETRY_EVERY`].
    tried_at_ms: AtomicU64,
    started: Instant,
}

/// While Redis is away, how often a verification tries it again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// KEYS: one hash per limit (field: slot index, value: units).
/// ARGV: now (ms), then per limit: limit, duration (ms), cost.
/// Returns: admitted (1/0), then per limit: units counted (after spending),
/// oldest slot holding units (-1: none), slot spent to.
const SPEND: &str = r#"
local now = tonumber(ARGV[1])
local n = #KEYS
local used, oldest, cur, slotms = {}, {}, {}, {}
local ok = 1
for i = 1, n do
  local limit = tonumber(ARGV[3 * i - 1])
  local dur = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local s = math.floor((dur + 9) / 10)
  slotms[i] = s
  local first = math.floor((now - dur) / s)
  cur[i] = math.floor(now / s)
  local fields = redis.call('HGETALL', KEYS[i])
  local sum, old = 0, -1
  for j = 1, #fields, 2 do
    local idx = tonumber(fields[j])
    if idx < first then
      redis.call('HDEL', KEYS[i], fields[j])
    else
      local c = tonumber(fields[j + 1])
      sum = sum + c
      if c > 0 and (old == -1 or idx < old) then old = idx end
    end
  end
  used[i] = sum
  oldest[i] = old
  if sum + cost > limit then ok = 0 end
end
local out = {ok}
for i = 1, n do
  local dur = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  if ok == 1 and cost > 0 then
    redis.call('HINCRBY', KEYS[i], cur[i], cost)
    redis.call('PEXPIRE', KEYS[i], dur + slotms[i])
    used[i] = used[i] + cost
    if oldest[i] == -1 or cur[i] < oldest[i] then oldest[i] = cur[i] end
  end
  out[#out + 1] = used[i]
  out[#out + 1] = oldest[i]
  out[#out + 1] = cur[i]
end
return out
"#;

/// KEYS: the hashes spent to; ARGV: per key, slot and cost.
const REFUND: &str = r#"
for i = 1, #KEYS do
  local slot = ARGV[2 * i - 1]
  if redis.call('HEXISTS', KEYS[i], slot) == 1 then
    local left = redis.call('HINCRBY', KEYS[i], slot, -tonumber(ARGV[2 * i]))
    if left <= 0 then redis.call('HDEL', KEYS[i], slot) end
  end
end
return 1
"#;

impl Limiter {
    /// Counts in this node's memory only.
    pub fn local() -> Self {
        Limiter { local: Mutex::default(), redis: None }
    }

    /// Shares every counter through the Redis at `url`; fails when Redis
    /// cannot be reached now.
    pub async fn with_redis(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| format!("Redis cannot be reached: {e}"))?;
        Ok(Limiter {
            local: Mutex::default(),
            redis: Some(Redis {
                conn,
                spend: redis::Script::new(SPEND),
                refund: redis::Script::new(REFUND),
                down: AtomicBool::new(false),
                tried_at_ms: AtomicU64::new(0),
                started: Instant::now(),
            }),
        })
    }

    /// `redis` or `local` (`local` too while Redis does not answer).
    pub fn mode(&self) -> &'static str {
        match &self.redis {
            Some(r) if !r.down.load(Ordering::Relaxed) => "redis",
            _ => "local",
        }
    }

    /// Whether Redis answers (`None` without Redis).
    pub async fn redis_reachable(&self) -> Option<bool> {
        let r = self.redis.as_ref()?;
        let mut conn = r.conn.clone();
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
        let ok = pong.is_ok();
        if ok {
            r.answered();
        }
        Some(ok)
    }

    /// Checks every limit of a request and spends them all, or none.
    pub async fn spend(&self, checks: &[Check<'_>], now_ms: i64) -> Outcome {
        if checks.is_empty() {
            return Outcome { admitted: true, ..Outcome::default() };
        }
        if let Some(r) = &self.redis
            && r.worth_trying()
        {
            // Boxed: the Redis round trip's future would otherwise make
            // every verification's future (and its moves) that much larger.
            match Box::pin(r.spend(checks, now_ms)).await {
                Ok(outcome) => {
                    r.answered();
                    return outcome;
                }
                Err(e) => r.failed(&e),
            }
        }
        self.spend_locally(checks, now_ms)
    }

    /// Gives back what [`Self::spend`] took, for a request refused after it.
    pub async fn refund(&self, checks: &[Check<'_>], outcome: &Outcome) {
        if !outcome.admitted || checks.is_empty() {
            return;
        }
        if let Some(r) = &self.redis
            && !r.down.load(Ordering::Relaxed)
        {
            match Box::pin(r.refund(checks, &outcome.slots)).await {
                Ok(()) => return,
                Err(e) => r.failed(&e),
            }
        }
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        for (c, &slot) in checks.iter().zip(&outcome.slots) {
            if let Some((_, w)) = local.get_mut(&c.counter) {
                w.refund(slot, c.cost);
            }
        }
    }

    fn spend_locally(&self, checks: &[Check<'_>], now_ms: i64) -> Outcome {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if local.len() >= LOCAL_CAPACITY {
            local.retain(|_, (duration, w)| !w.is_idle(*duration, now_ms));
        }
        let mut tallies = Vec::with_capacity(checks.len());
        for c in checks {
            if !local.contains_key(&c.counter) {
                local.insert(c.counter.clone(), (c.limit.duration_ms, Window::default()));
            }
            let (_, w) = local.get_mut(&c.counter).expect("the window is there");
            tallies.push(w.tally(c.limit, now_ms));
        }
        let admitted = checks.iter().zip(&tallies).all(|(c, &(used, _))| used + c.cost <= c.limit.limit);
        let mut outcome = Outcome { admitted, states: Vec::with_capacity(checks.len()), slots: Vec::new() };
        for (c, (used, oldest)) in checks.iter().zip(tallies) {
            let exceeded = used + c.cost > c.limit.limit;
            if admitted && c.cost > 0 {
                let (_, w) = local.get_mut(&c.counter).expect("the window is there");
                let slot = w.add(c.limit, now_ms, c.cost);
                outcome.slots.push(slot);
                let oldest = Some(oldest.map_or(slot, |o| o.min(slot)));
                outcome.states.push(LimitState::of(c.limit, used + c.cost, oldest, false, now_ms));
            } else {
                outcome.slots.push(now_ms.div_euclid(c.limit.slot_ms()));
                outcome.states.push(LimitState::of(c.limit, used, oldest, exceeded, now_ms));
            }
        }
        outcome
    }
}

impl Redis {
    /// Up, or down but not tried for [`RETRY_EVERY`] (then this caller
    /// tries): a Redis that is away costs one failed call a second, not
    /// one per verification.
    fn worth_trying(&self) -> bool {
        if !self.down.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.tried_at_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= RETRY_EVERY.as_millis() as u64
            && self.tried_at_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    fn answered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis answers again: rate limits are shared by every node");
        }
    }

    fn failed(&self, e: &redis::RedisError) {
        self.tried_at_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "Redis does not answer: limiting on this node alone until it does");
        }
    }

    async fn spend(&self, checks: &[Check<'_>], now_ms: i64) -> redis::RedisResult<Outcome> {
        let mut invocation = self.spend.prepare_invoke();
        invocation.arg(now_ms);
        for c in checks {
            invocation.key(&c.counter).arg(c.limit.limit).arg(c.limit.duration_ms).arg(c.cost);
        }
        let mut conn = self.conn.clone();
        let out: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        if out.len() != 1 + 3 * checks.len() {
            return Err(redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "rate limit script answer")));
        }
        let admitted = out[0] == 1;
        let mut outcome = Outcome { admitted, states: Vec::new(), slots: Vec::new() };
        for (c, v) in checks.iter().zip(out[1..].chunks(3)) {
            let (used, oldest, slot) = (v[0], v[1], v[2]);
            let spent = admitted && c.cost > 0;
            let exceeded = !spent && used + c.cost > c.limit.limit;
            let oldest = (oldest >= 0).then_some(oldest);
            outcome.states.push(LimitState::of(c.limit, used, oldest, exceeded, now_ms));
            outcome.slots.push(slot);
        }
        Ok(outcome)
    }

    async fn refund(&self, checks: &[Check<'_>], slots: &[i64]) -> redis::RedisResult<()> {
        let mut invocation = self.refund.prepare_invoke();
        for (c, slot) in checks.iter().zip(slots) {
            invocation.key(&c.counter).arg(*slot).arg(c.cost);
        }
        let mut conn = self.conn.clone();
        let _: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(())
    }
}
