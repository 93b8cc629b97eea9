//! The Lua scripts. Each runs atomically on the server, touches keys of one
//! pipeline only (one hash slot), and answers with a tagged array: `{'ok',
//! …}`, `{'exists'}`, `{'precondition'}`, `{'big', size}`, `{'foreign',
//! key, what}` for a document key that holds something other than an
//! oxiflow document, `{'index', key, what}` for a pipeline index that is not
//! a hash, and, for listings, `{'rebuild', token}`. Nothing is ever written
//! over a foreign value.
//!
//! **All or nothing.** A script checks the type of every key it will write
//! before its first write, and then runs only commands that cannot fail on
//! those keys: a script writes everything or nothing. The rest cannot stop
//! it half-way either: Redis checks the ACL for every key a script declares
//! before running it (and a script touches no other key); it refuses
//! writes for lack of memory, on a read-only replica or after a failed save
//! on conditions that do not change while a script runs, so at a script's
//! first write or not at all. The index is still written before
//! the document, so should anything fail in between, the index lists a key
//! whose document did not change, never hides a document that changed.
//!
//! A document is a hash: `v` its version (a random 128-bit token, so a
//! version never repeats, not even after a delete and a re-create), `b` its
//! body, `t` the server's time of the write in milliseconds (`oxiflow
//! doctor` compares clocks with it). The index of a pipeline is a hash from
//! store key to version, so listing a pipeline is one script that returns
//! its fields, with the versions.
//!
//! **A lost index.** The index carries the field `_complete` once it is
//! known to list every document of the pipeline. A write into an absent
//! index creates it without that field, with only its own key. A listing
//! that finds no `_complete` rebuilds: `LIST` leaves a token in the index
//! (`_rebuilding`, kept if another listing left one), the store SCANs the
//! pipeline's hash-tagged key pattern (never KEYS) and `REBUILD` adds every
//! document found that still exists, with the version it has then, and sets
//! `_complete` — only if the token is still there, i.e. the index was not
//! deleted since: every document the SCAN may have missed was written after
//! the token, and so into the index. If the token is gone, that listing is
//! answered from the SCAN alone (sound for it: a SCAN returns every key that
//! exists throughout it) and the next listing rebuilds. Field names that do
//! not start with `pipelines/` are never store keys.

use std::sync::LazyLock;

use ::redis::Script;

/// Shared by every script: the checks, done before any write.
const COMMON: &str = r"
local COMPLETE, REBUILDING = '_complete', '_rebuilding'

-- The document at key: its version, nil when absent, or a 'foreign' reply.
local function check(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return nil end
  if t ~= 'hash' then return {'foreign', key, 'a Redis ' .. t} end
  local v = redis.call('HGET', key, 'v')
  if not v then return {'foreign', key, 'a hash without the field v'} end
  return v
end

-- nil when the pipeline index at key (if there is one) is absent or a hash.
local function check_index(key)
  if not key then return nil end
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' or t == 'hash' then return nil end
  return {'index', key, 'a Redis ' .. t}
end

local function now_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- {'ok', field, value, …}: the whole index.
local function fields(index)
  local out = {'ok'}
  local all = redis.call('HGETALL', index)
  for i = 1, #all do out[i + 1] = all[i] end
  return out
end
";

/// KEYS: doc. ARGV: max bytes. → nil | {'ok', version, body} | {'big', size}
const GET: &str = r"
local v = check(KEYS[1])
if v == nil then return false end
if type(v) == 'table' then return v end
local size = redis.call('HSTRLEN', KEYS[1], 'b')
if size > tonumber(ARGV[1]) then return {'big', size} end
local b = redis.call('HGET', KEYS[1], 'b')
if not b then return {'foreign', KEYS[1], 'a hash without the field b'} end
return {'ok', v, b}
";

/// KEYS: doc [, index]. ARGV: version, body, index field. → {'ok'} | {'exists'}
const CREATE: &str = r"
local v = check(KEYS[1])
if type(v) == 'table' then return v end
if v then return {'exists'} end
local bad = check_index(KEYS[2])
if bad then return bad end
if KEYS[2] then redis.call('HSET', KEYS[2], ARGV[3], ARGV[1]) end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2], 't', now_ms())
return {'ok'}
";

/// KEYS: doc [, index]. ARGV: expected version, version, body, index field.
/// → {'ok'} | {'precondition'} (also when absent)
const SWAP: &str = r"
local v = check(KEYS[1])
if type(v) == 'table' then return v end
if v ~= ARGV[1] then return {'precondition'} end
local bad = check_index(KEYS[2])
if bad then return bad end
if KEYS[2] then redis.call('HSET', KEYS[2], ARGV[4], ARGV[2]) end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'b', ARGV[3], 't', now_ms())
return {'ok'}
";

/// KEYS: doc [, index]. ARGV: index field. → {'ok'}
/// An index left with only `_complete` (the pipeline has no document any
/// more) is deleted with the last document.
const DELETE: &str = r"
local v = check(KEYS[1])
if type(v) == 'table' then return v end
local bad = check_index(KEYS[2])
if bad then return bad end
if v then redis.call('DEL', KEYS[1]) end
if KEYS[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  if redis.call('HLEN', KEYS[2]) == 1 and redis.call('HEXISTS', KEYS[2], COMPLETE) == 1 then redis.call('DEL', KEYS[2]) end
end
return {'ok'}
";

/// KEYS: index. ARGV: a fresh token. → {'ok', field, version, …} when the
/// index is complete | {'rebuild', token}: the token now in the index (this
/// one, or another listing's that is rebuilding it).
const LIST: &str = r"
local bad = check_index(KEYS[1])
if bad then return bad end
if redis.call('HEXISTS', KEYS[1], COMPLETE) == 1 then return fields(KEYS[1]) end
redis.call('HSETNX', KEYS[1], REBUILDING, ARGV[1])
return {'rebuild', redis.call('HGET', KEYS[1], REBUILDING)}
";

/// KEYS: index, then the documents a SCAN found after LIST gave the token.
/// ARGV: the token, then the documents' store keys (their index fields).
/// → {'ok', field, version, …}: the index, now complete; or, when the token
/// is gone (the index was deleted or replaced since it was set, so the SCAN
/// may have missed a document whose write went into the lost index), the
/// documents found, with nothing written and the index left for the next
/// listing to rebuild. Either lists every document that existed before the
/// listing began. A document gets its current version; a foreign value an
/// empty one (listed without a version: reading it reports it); one deleted
/// since the SCAN is left out.
const REBUILD: &str = r"
local bad = check_index(KEYS[1])
if bad then return bad end
if redis.call('HEXISTS', KEYS[1], COMPLETE) == 1 then return fields(KEYS[1]) end
local found = {'ok'}
for i = 2, #KEYS do
  local v = check(KEYS[i])
  if type(v) == 'table' then v = '' end
  if v then
    found[#found + 1] = ARGV[i]
    found[#found + 1] = v
  end
end
if redis.call('HGET', KEYS[1], REBUILDING) ~= ARGV[1] then return found end
for i = 2, #found, 2 do redis.call('HSET', KEYS[1], found[i], found[i + 1]) end
redis.call('HDEL', KEYS[1], REBUILDING)
if redis.call('EXISTS', KEYS[1]) == 0 then return {'ok'} end
redis.call('HSET', KEYS[1], COMPLETE, now_ms())
return fields(KEYS[1])
";

/// The scripts, hashed once (EVALSHA sends the hash, not the text).
pub(crate) struct Scripts {
    pub get: Script,
    pub create: Script,
    pub swap: Script,
    pub delete: Script,
    pub list: Script,
    pub rebuild: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let with_common = |body: &str| Script::new(&format!("{COMMON}{body}"));
    Scripts {
        get: with_common(GET),
        create: with_common(CREATE),
        swap: with_common(SWAP),
        delete: with_common(DELETE),
        list: with_common(LIST),
        rebuild: with_common(REBUILD),
    }
});

/// A script's answer, decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Absent,
    Ok(Vec<Vec<u8>>),
    Exists,
    Precondition,
    TooBig(usize),
    /// A document key holds something oxiflow did not write.
    Foreign {
        redis_key: String,
        what: String,
    },
    /// A pipeline's index is not a hash.
    BadIndex {
        redis_key: String,
        what: String,
    },
    /// The index is incomplete: SCAN, then rebuild with this token.
    Rebuild(String),
}

impl Reply {
    pub(crate) fn decode(value: ::redis::Value) -> Result<Reply, String> {
        use ::redis::Value;
        let items = match value {
            Value::Nil => return Ok(Reply::Absent),
            Value::Array(items) => items,
            other => return Err(format!("unexpected script reply {other:?}")),
        };
        let mut parts = items.into_iter().map(|v| match v {
            Value::BulkString(b) => Ok(b),
            Value::SimpleString(s) => Ok(s.into_bytes()),
            Value::Int(n) => Ok(n.to_string().into_bytes()),
            other => Err(format!("unexpected script reply item {other:?}")),
        });
        let tag = parts.next().transpose()?.unwrap_or_default();
        let rest = parts.collect::<Result<Vec<_>, _>>()?;
        let text = |i: usize| rest.get(i).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
        Ok(match tag.as_slice() {
            b"ok" => Reply::Ok(rest),
            b"exists" => Reply::Exists,
            b"precondition" => Reply::Precondition,
            b"big" => Reply::TooBig(text(0).parse().map_err(|_| format!("bad size in {rest:?}"))?),
            b"foreign" => Reply::Foreign { redis_key: text(0), what: text(1) },
            b"index" => Reply::BadIndex { redis_key: text(0), what: text(1) },
            b"rebuild" => Reply::Rebuild(text(0)),
            other => return Err(format!("unknown script reply {:?}", String::from_utf8_lossy(other))),
        })
    }
}

#[cfg(test)]
mod tests {
    use ::redis::Value;

    use super::*;

    #[test]
    fn replies_decode() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(Reply::decode(Value::Nil).unwrap(), Reply::Absent);
        assert_eq!(
            Reply::decode(Value::Array(vec![bulk("ok"), bulk("v1"), bulk("body")])).unwrap(),
            Reply::Ok(vec![b"v1".to_vec(), b"body".to_vec()])
        );
        assert_eq!(Reply::decode(Value::Array(vec![bulk("big"), Value::Int(42)])).unwrap(), Reply::TooBig(42));
        assert_eq!(
            Reply::decode(Value::Array(vec![bulk("foreign"), bulk("p:k"), bulk("a Redis string")])).unwrap(),
            Reply::Foreign { redis_key: "p:k".into(), what: "a Redis string".into() }
        );
        assert_eq!(
            Reply::decode(Value::Array(vec![bulk("index"), bulk("p:pipelines/{x}"), bulk("a Redis list")])).unwrap(),
            Reply::BadIndex { redis_key: "p:pipelines/{x}".into(), what: "a Redis list".into() }
        );
        assert_eq!(Reply::decode(Value::Array(vec![bulk("rebuild"), bulk("t1")])).unwrap(), Reply::Rebuild("t1".into()));
        assert!(Reply::decode(Value::Okay).is_err());
        assert!(Reply::decode(Value::Array(vec![bulk("huh")])).is_err());
    }

    #[test]
    fn scripts_have_distinct_hashes() {
        let s = &*SCRIPTS;
        let mut hashes =
            [s.get.get_hash(), s.create.get_hash(), s.swap.get_hash(), s.delete.get_hash(), s.list.get_hash(), s.rebuild.get_hash()];
        hashes.sort();
        assert!(hashes.windows(2).all(|w| w[0] != w[1]));
    }

    /// Every write in a script comes after every check: the first line that
    /// writes follows the last line that can refuse.
    #[test]
    fn scripts_check_before_they_write() {
        let writes = ["redis.call('HSET'", "redis.call('DEL'", "redis.call('HDEL'", "redis.call('HSETNX'"];
        let refusals = ["return v", "return bad", "return {'exists'}", "return {'precondition'}", "return found"];
        for (name, body) in [("CREATE", CREATE), ("SWAP", SWAP), ("DELETE", DELETE), ("LIST", LIST), ("REBUILD", REBUILD)] {
            let lines: Vec<&str> = body.lines().collect();
            let first_write = lines.iter().position(|l| writes.iter().any(|w| l.contains(w))).expect("a write");
            let last_refusal = lines.iter().rposition(|l| refusals.iter().any(|r| l.contains(r))).expect("a check");
            assert!(last_refusal < first_write, "{name}: a refusal after the first write:\n{body}");
        }
    }
}
