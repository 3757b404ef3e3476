//! Riemann's protocol buffers (`proto.proto` of riemann-java-client), written out as prost
//! messages so that no `protoc` is needed at build time. Field numbers and types match the
//! upstream definition exactly (proto2: every `optional` field is an `Option`).
//!
//! ```proto
//! message State { optional int64 time = 1; optional string state = 2; optional string service = 3;
//!   optional string host = 4; optional string description = 5; optional bool once = 6;
//!   repeated string tags = 7; optional float ttl = 8; }
//! message Event { optional int64 time = 1; optional string state = 2; optional string service = 3;
//!   optional string host = 4; optional string description = 5; repeated string tags = 7;
//!   optional float ttl = 8; repeated Attribute attributes = 9; optional int64 time_micros = 10;
//!   optional sint64 metric_sint64 = 13; optional double metric_d = 14; optional float metric_f = 15; }
//! message Query { optional string string = 1; }
//! message Msg { optional bool ok = 2; optional string error = 3; repeated State states = 4;
//!   optional Query query = 5; repeated Event events = 6; }
//! message Attribute { required string key = 1; optional string value = 2; }
//! ```

/// A Riemann state (legacy; kept so that any `Msg` decodes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct State {
    /// Seconds since the Unix epoch.
    #[prost(int64, optional, tag = "1")]
    pub time: Option<i64>,
    /// State, e.g. `ok`.
    #[prost(string, optional, tag = "2")]
    pub state: Option<String>,
    /// Service name.
    #[prost(string, optional, tag = "3")]
    pub service: Option<String>,
    /// Host name.
    #[prost(string, optional, tag = "4")]
    pub host: Option<String>,
    /// Free text.
    #[prost(string, optional, tag = "5")]
    pub description: Option<String>,
    /// Whether the state is transient.
    #[prost(bool, optional, tag = "6")]
    pub once: Option<bool>,
    /// Tags.
    #[prost(string, repeated, tag = "7")]
    pub tags: Vec<String>,
    /// Seconds the state stays valid.
    #[prost(float, optional, tag = "8")]
    pub ttl: Option<f32>,
}

/// One Riemann event: a measurement of one service on one host.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(int64, optional, tag = "1")]
    pub time: Option<i64>,
    /// State, e.g. `ok`.
    #[prost(string, optional, tag = "2")]
    pub state: Option<String>,
    /// Service name (what is measured).
    #[prost(string, optional, tag = "3")]
    pub service: Option<String>,
    /// Host name.
    #[prost(string, optional, tag = "4")]
    pub host: Option<String>,
    /// Free text.
    #[prost(string, optional, tag = "5")]
    pub description: Option<String>,
    /// Tags.
    #[prost(string, repeated, tag = "7")]
    pub tags: Vec<String>,
    /// Seconds the event stays valid in Riemann's index.
    #[prost(float, optional, tag = "8")]
    pub ttl: Option<f32>,
    /// Custom key/value attributes.
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<Attribute>,
    /// Microseconds since the Unix epoch (takes precedence over `time`).
    #[prost(int64, optional, tag = "10")]
    pub time_micros: Option<i64>,
    /// Integer metric.
    #[prost(sint64, optional, tag = "13")]
    pub metric_sint64: Option<i64>,
    /// Double-precision metric.
    #[prost(double, optional, tag = "14")]
    pub metric_d: Option<f64>,
    /// Single-precision metric (what old servers read).
    #[prost(float, optional, tag = "15")]
    pub metric_f: Option<f32>,
}

/// A query of Riemann's index.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Query {
    /// The query text.
    #[prost(string, optional, tag = "1")]
    pub string: Option<String>,
}

/// The envelope of every request and reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    /// Reply: whether the request was accepted.
    #[prost(bool, optional, tag = "2")]
    pub ok: Option<bool>,
    /// Reply: why the request was refused.
    #[prost(string, optional, tag = "3")]
    pub error: Option<String>,
    /// Legacy states.
    #[prost(message, repeated, tag = "4")]
    pub states: Vec<State>,
    /// A query.
    #[prost(message, optional, tag = "5")]
    pub query: Option<Query>,
    /// Events.
    #[prost(message, repeated, tag = "6")]
    pub events: Vec<Event>,
}

/// A custom attribute of an event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Attribute {
    /// Attribute name.
    #[prost(string, required, tag = "1")]
    pub key: String,
    /// Attribute value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// Bytes worked out by hand from the protobuf encoding rules, so that a wrong tag or wire
    /// type in the derives above cannot go unnoticed.
    #[test]
    fn wire_format_matches_riemann_proto() {
        let msg = Msg {
            events: vec![Event {
                time: Some(1),
                service: Some("s".into()),
                attributes: vec![Attribute {
                    key: "k".into(),
                    value: Some("v".into()),
                }],
                time_micros: Some(2),
                metric_sint64: Some(-1),
                metric_d: Some(0.0),
                metric_f: Some(0.0),
                ttl: Some(0.0),
                ..Event::default()
            }],
            ok: Some(true),
            ..Msg::default()
        };
        let bytes = msg.encode_to_vec();
        let event: &[u8] = &[
            0x08, 1, // time = 1 (varint, field 1)
            0x1a, 1, b's', // service (len, field 3)
            0x45, 0, 0, 0, 0, // ttl (fixed32, field 8)
            0x4a, 6, 0x0a, 1, b'k', 0x12, 1, b'v', // attribute (field 9)
            0x50, 2, // time_micros (field 10)
            0x68, 1, // metric_sint64 = -1 zigzag (field 13)
            0x71, 0, 0, 0, 0, 0, 0, 0, 0, // metric_d (fixed64, field 14)
            0x7d, 0, 0, 0, 0, // metric_f (fixed32, field 15)
        ];
        let mut expected = vec![0x10, 1, 0x32, event.len() as u8];
        expected.extend_from_slice(event);
        assert_eq!(bytes, expected);
        assert_eq!(Msg::decode(bytes.as_slice()).unwrap(), msg);
    }
}
