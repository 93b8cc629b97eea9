//! The four Lua scripts. Each runs atomically on the server, touches one
//! document and at most its pipeline's index (same hash slot), and answers
//! with a tagged array: `{'ok', …}`, `{'exists'}`, `{'precondition'}`,
//! `{'big', size}`, or `{'foreign', what}` for a key that holds something
//! other than an oxiflow document. Nothing is ever written over a foreign
//! value.
//!
//! A document is a hash: `v` its version (a random 128-bit token, so a
//! version never repeats, not even after a delete and a re-create), `b` its
//! body, `t` the server's time of the write in milliseconds (`oxiflow
//! doctor` compares clocks with it). The index of a pipeline is a hash from
//! store key to version, so listing a pipeline is one HGETALL that carries
//! the versions.

use std::sync::LazyLock;

use ::redis::Script;

/// Returns the document's version, nil when absent, or a `foreign` reply.
/// One HGET on the common path; the type is looked up only to name what a
/// foreign value is.
const CHECK: &str = r"
local function check(key)
  local v = redis.pcall('HGET', key, 'v')
  if type(v) == 'table' and v.err then return {'foreign', 'a Redis ' .. redis.call('TYPE', key)['ok']} end
  if v then return v end
  if redis.call('EXISTS', key) == 1 then return {'foreign', 'a hash without the field v'} end
  return nil
end
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
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
if not b then return {'foreign', 'a hash without the field b'} end
return {'ok', v, b}
";

/// KEYS: doc [, index]. ARGV: version, body, index field. → {'ok'} | {'exists'}
const CREATE: &str = r"
local v = check(KEYS[1])
if type(v) == 'table' then return v end
if v then return {'exists'} end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2], 't', now_ms())
if KEYS[2] then redis.call('HSET', KEYS[2], ARGV[3], ARGV[1]) end
return {'ok'}
";

/// KEYS: doc [, index]. ARGV: expected version, version, body, index field.
/// → {'ok'} | {'precondition'} (also when absent)
const SWAP: &str = r"
local v = check(KEYS[1])
if type(v) == 'table' then return v end
if v ~= ARGV[1] then return {'precondition'} end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'b', ARGV[3], 't', now_ms())
if KEYS[2] then redis.call('HSET', KEYS[2], ARGV[4], ARGV[2]) end
return {'ok'}
";

/// KEYS: doc [, index]. ARGV: index field. → {'ok'}
const DELETE: &str = r"
local v = check(KEYS[1])
if type(v) == 'table' then return v end
if v then redis.call('DEL', KEYS[1]) end
if KEYS[2] then redis.call('HDEL', KEYS[2], ARGV[1]) end
return {'ok'}
";

/// The scripts, hashed once (EVALSHA sends the hash, not the text).
pub(crate) struct Scripts {
    pub get: Script,
    pub create: Script,
    pub swap: Script,
    pub delete: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let with_check = |body: &str| Script::new(&format!("{CHECK}{body}"));
    Scripts { get: with_check(GET), create: with_check(CREATE), swap: with_check(SWAP), delete: with_check(DELETE) }
});

/// A script's answer, decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Absent,
    Ok(Vec<Vec<u8>>),
    Exists,
    Precondition,
    TooBig(usize),
    Foreign(String),
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
            b"foreign" => Reply::Foreign(text(0)),
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
            Reply::decode(Value::Array(vec![bulk("foreign"), bulk("a Redis string")])).unwrap(),
            Reply::Foreign("a Redis string".into())
        );
        assert!(Reply::decode(Value::Okay).is_err());
        assert!(Reply::decode(Value::Array(vec![bulk("huh")])).is_err());
    }

    #[test]
    fn scripts_have_distinct_hashes() {
        let s = &*SCRIPTS;
        let mut hashes = [s.get.get_hash(), s.create.get_hash(), s.swap.get_hash(), s.delete.get_hash()];
        hashes.sort();
        assert!(hashes.windows(2).all(|w| w[0] != w[1]));
    }
}
