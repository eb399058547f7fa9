//! Hand-written parsing of the few Redis replies the queue reads, without the per-entry
//! hash maps of redis-rs's generic stream types (the fetch path runs for every job).

use redis::Value;

/// One stream entry: its id and field/value pairs.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub id: String,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

pub(crate) fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

pub(crate) fn as_string(v: &Value) -> Option<String> {
    as_bytes(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Double(d) => Some(*d as i64),
        other => as_bytes(other).and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()),
    }
}

fn items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

/// Parses `[id, [field, value, ...]]` entries (XRANGE, XREADGROUP, XAUTOCLAIM shapes).
pub(crate) fn entries(v: &Value) -> Vec<Entry> {
    let Some(list) = items(v) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let pair = items(e)?;
            let id = as_string(pair.first()?)?;
            let mut fields = Vec::new();
            match pair.get(1) {
                Some(Value::Map(m)) => {
                    for (k, v) in m {
                        fields.push((as_bytes(k)?.to_vec(), as_bytes(v)?.to_vec()));
                    }
                }
                Some(other) => {
                    let flat = items(other).unwrap_or(&[]);
                    for kv in flat.chunks(2) {
                        if let [k, v] = kv {
                            fields.push((as_bytes(k)?.to_vec(), as_bytes(v)?.to_vec()));
                        }
                    }
                }
                None => {}
            }
            Some(Entry { id, fields })
        })
        .collect()
}

/// Parses an `XREADGROUP` reply for a single stream (nil on timeout; RESP2 array or RESP3 map).
pub(crate) fn read_group(v: &Value) -> Vec<Entry> {
    match v {
        Value::Nil => Vec::new(),
        Value::Map(m) => m.first().map(|(_, e)| entries(e)).unwrap_or_default(),
        Value::Array(streams) => streams
            .first()
            .and_then(|s| items(s)?.get(1).map(entries))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Turns a flat `[k, v, k, v]` array or a RESP3 map into pairs (XINFO, HGETALL replies).
pub(crate) fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(m) => m.iter().filter_map(|(k, v)| Some((as_string(k)?, v.clone()))).collect(),
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((as_string(k)?, v.clone())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Items of an array reply (empty for anything else).
pub(crate) fn list(v: &Value) -> &[Value] {
    items(v).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_resp2_xreadgroup_reply() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("q"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("id"), bulk("j1"), bulk("p"), bulk("{}")]),
            ])]),
        ])]);
        let e = read_group(&reply);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].id, "1-0");
        assert_eq!(e[0].fields[1], (b"p".to_vec(), b"{}".to_vec()));
        assert!(read_group(&Value::Nil).is_empty());
    }
}
