//! The two Lua scripts of the Redis store and the pub/sub message the publish script
//! sends.
//!
//! Both run with EVALSHA (falling back to EVAL when Redis does not know the script yet),
//! so a publish or a read is one round trip and atomic: no other client sees the offset
//! assigned but the event missing from history, or a read mixing two moments. All keys a
//! script touches share the topic's hash tag (see [`super::keys`]), so they run on Redis
//! Cluster too. The channel is passed as an argument, not a key: it is not a key, and it
//! carries the same tag.

/// One publish. Assigns the next offset, creates the epoch when the topic has none, appends
/// to history, sets retained state, publishes the frame, and returns `{offset, epoch}`.
///
/// KEYS: 1 meta, 2 stream, 3 retained.
/// ARGV: 1 epoch candidate, 2 frame head, 3 frame tail, 4 history size (0: no history),
/// 5 history ttl ms, 6 meta ttl ms, 7 retain (`1`/`0`), 8 retained ttl ms, 9 publishing
/// node id, 10 channel, 11 the publish command (`PUBLISH`, or `SPUBLISH` on a cluster).
///
/// The frame is spliced as `head .. offset .. tail` (see
/// [`crate::codec::encode_delivery_parts`]); `%d` keeps every offset below 2^53 in plain
/// digits (Lua's default number format would switch to exponent notation above 10^14).
/// A fresh epoch drops any stream left over from the lost one, so the new offsets,
/// starting again at one, can be appended. The message on the channel is
/// `<node id>\n<epoch>\n<offset>\n<frame>` (see [`ChannelMessage`]).
pub const PUBLISH: &str = r"
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local off = string.format('%d', offset)
local frame = ARGV[2] .. off .. ARGV[3]
if tonumber(ARGV[4]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], off .. '-0', 'f', frame)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
if ARGV[7] == '1' then
  redis.call('SET', KEYS[3], frame, 'PX', ARGV[8])
end
redis.call(ARGV[11], ARGV[10], ARGV[9] .. '\n' .. epoch .. '\n' .. off .. '\n' .. frame)
return {offset, epoch}
";

/// Several publishes to one topic, in order, in one script: what [`PUBLISH`] does for each,
/// with one offset increment, one TTL refresh and one channel message for the lot. Returns
/// `{first offset, epoch}`; the events have the offsets `first, first + 1, …`.
///
/// KEYS: 1 meta, 2 stream, 3 retained.
/// ARGV: 1 epoch candidate, 2 history size (0: no history), 3 history ttl ms, 4 meta ttl
/// ms, 5 retained ttl ms, 6 publishing node id, 7 channel, 8 the publish command, then per
/// event: frame head, frame tail, retain (`1`/`0`).
///
/// The channel message is `<node id>\n<epoch>\n<first offset>\n<frame>\n<frame>…`: a frame
/// is compact JSON and never holds a raw newline (see [`ChannelMessage::frames`]).
pub const PUBLISH_MANY: &str = r"
local n = (#ARGV - 8) / 3
local last = redis.call('HINCRBY', KEYS[1], 'offset', n)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local first = last - n + 1
local history = tonumber(ARGV[2]) > 0
local frames = {}
for i = 0, n - 1 do
  local off = string.format('%d', first + i)
  local frame = ARGV[9 + 3 * i] .. off .. ARGV[10 + 3 * i]
  if history then
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], off .. '-0', 'f', frame)
  end
  if ARGV[11 + 3 * i] == '1' then
    redis.call('SET', KEYS[3], frame, 'PX', ARGV[5])
  end
  frames[#frames + 1] = frame
end
if history then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
redis.call(ARGV[8], ARGV[7], ARGV[6] .. '\n' .. epoch .. '\n' .. string.format('%d', first) .. '\n' .. table.concat(frames, '\n'))
return {first, epoch}
";

/// One read: position, the events after an offset, and the retained state, at one
/// instant. A topic without an epoch gets one here (the candidate), so that a reader's
/// position stays valid when the first publish comes.
///
/// KEYS: 1 meta, 2 stream, 3 retained.
/// ARGV: 1 epoch candidate, 2 meta ttl ms, 3 mode (`0`: no events, `1`: after an offset),
/// 4 the reader's offset, 5 the reader's epoch (empty: the current one), 6 limit,
/// 7 partial (`1`/`0`), 8 retained (`1`/`0`).
///
/// Returns `{offset, epoch, recovered (0/1), {offset, frame, offset, frame, …}, retained
/// frame or nil}`. Recovered means the same epoch, an offset not in the future, and the
/// stream still holding the event right after it (nothing trimmed or expired in between);
/// events come back when recovered, or with partial (from the start of history when the
/// epoch differs), like the memory broker's read.
pub const READ: &str = r"
local meta = redis.call('HMGET', KEYS[1], 'offset', 'epoch')
local offset = tonumber(meta[1]) or 0
local epoch = meta[2]
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', offset)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
end
local recovered = 0
local events = {}
if ARGV[3] == '1' then
  local same = ARGV[5] == '' or ARGV[5] == epoch
  local after = 0
  if same then after = tonumber(ARGV[4]) end
  if after <= offset then
    local limit = tonumber(ARGV[6])
    local entries = {}
    if after < offset then
      local count = limit
      if count < 1 then count = 1 end
      entries = redis.call('XRANGE', KEYS[2], string.format('%d-0', after + 1), '+', 'COUNT', count)
    end
    local first = entries[1] and tonumber(string.match(entries[1][1], '^(%d+)'))
    if same and (after == offset or first == after + 1) then recovered = 1 end
    if recovered == 1 or ARGV[7] == '1' then
      for i = 1, math.min(#entries, limit) do
        local entry = entries[i]
        events[#events + 1] = string.match(entry[1], '^(%d+)')
        events[#events + 1] = entry[2][2]
      end
    end
  end
end
local retained = false
if ARGV[8] == '1' then retained = redis.call('GET', KEYS[3]) end
return {offset, epoch, recovered, events, retained}
";

/// A channel message as [`ChannelMessage::parse`] reads it (what the scripts build in
/// Lua, for messages built on the node: presence frames, with epoch `""` and offset 0).
pub fn channel_payload(node_id: &str, epoch: &str, offset: u64, frame: &str) -> String {
    format!("{node_id}\n{epoch}\n{offset}\n{frame}")
}

/// What the publish scripts send on a topic's channel:
/// `<node id>\n<epoch>\n<offset>\n<frame>`, or several frames with consecutive offsets
/// from `offset`, one per line ([`PUBLISH_MANY`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage<'a> {
    /// The node that published (it skips its own echo).
    pub node_id: &'a str,
    /// The topic's epoch at the publish.
    pub epoch: &'a str,
    /// The event's offset.
    pub offset: u64,
    /// The delivered frame (several, one per line, from [`PUBLISH_MANY`]).
    pub frame: &'a str,
}

impl<'a> ChannelMessage<'a> {
    /// Parses a message payload; `None` when it is not one of ours.
    pub fn parse(payload: &'a str) -> Option<Self> {
        let mut parts = payload.splitn(4, '\n');
        let node_id = parts.next()?;
        let epoch = parts.next()?;
        let offset = parts.next()?.parse().ok()?;
        let frame = parts.next()?;
        Some(Self { node_id, epoch, offset, frame })
    }

    /// Each frame with its offset (`offset`, `offset + 1`, …).
    pub fn frames(&self) -> impl Iterator<Item = (u64, &'a str)> + 'a {
        let first = self.offset;
        self.frame.split('\n').enumerate().map(move |(i, frame)| (first + i as u64, frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What a node builds parses back to the same parts, whatever the node id, epoch
        /// and frames (compact JSON never holds a raw newline), and any payload at all
        /// parses or is refused without panicking.
        #[test]
        fn channel_messages_round_trip(
            node in "[A-Za-z0-9_]{1,24}",
            epoch in "[0-9a-f]{0,16}",
            offset in 0u64..(1 << 53),
            frames in proptest::collection::vec("[^\n]{0,40}", 1..5),
            junk in ".{0,80}",
        ) {
            let joined = frames.join("\n");
            let payload = channel_payload(&node, &epoch, offset, &joined);
            let message = ChannelMessage::parse(&payload).unwrap();
            prop_assert_eq!((message.node_id, message.epoch, message.offset), (node.as_str(), epoch.as_str(), offset));
            let parsed: Vec<(u64, &str)> = message.frames().collect();
            let expected: Vec<(u64, &str)> = frames.iter().enumerate().map(|(i, f)| (offset + i as u64, f.as_str())).collect();
            prop_assert_eq!(parsed, expected);
            let _ = ChannelMessage::parse(&junk).map(|m| m.frames().count());
        }
    }

    #[test]
    fn parses_channel_messages() {
        let msg = ChannelMessage::parse("n1\nabc\n42\n{\"a\":\"x\\ny\"}").unwrap();
        assert_eq!(msg, ChannelMessage { node_id: "n1", epoch: "abc", offset: 42, frame: "{\"a\":\"x\\ny\"}" });
        assert!(ChannelMessage::parse("n1\nabc\nx\n{}").is_none());
        assert!(ChannelMessage::parse("n1\nabc\n1").is_none());
        let many = ChannelMessage::parse("n1\ne\n7\n{\"a\":1}\n{\"a\":2}").unwrap();
        assert_eq!(many.frames().collect::<Vec<_>>(), vec![(7, "{\"a\":1}"), (8, "{\"a\":2}")]);
        let built = channel_payload("n2", "", 0, "{}");
        assert_eq!(
            ChannelMessage::parse(&built),
            Some(ChannelMessage { node_id: "n2", epoch: "", offset: 0, frame: "{}" })
        );
    }
}
