//! The API's methods by path, read from the descriptor sets, and proto3 JSON both ways.

use std::collections::HashMap;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

/// One method's message types and shape.
pub struct Method {
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

/// Every method the server hosts, by its path `/<package>.<Service>/<Method>`.
pub struct Methods {
    by_path: HashMap<String, Method>,
}

impl Methods {
    /// The Veza services and the standard health service.
    pub fn load() -> anyhow::Result<Methods> {
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(veza_proto::FILE_DESCRIPTOR_SET)?;
        pool.decode_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)?;
        let mut by_path = HashMap::new();
        for service in pool.services() {
            for m in service.methods() {
                let path = format!("/{}/{}", service.full_name(), m.name());
                let method = Method {
                    input: m.input(),
                    output: m.output(),
                    client_streaming: m.is_client_streaming(),
                    server_streaming: m.is_server_streaming(),
                };
                by_path.insert(path, method);
            }
        }
        Ok(Methods { by_path })
    }

    pub fn get(&self, path: &str) -> Option<&Method> {
        self.by_path.get(path)
    }
}

/// A JSON request body as the message's protobuf bytes; an empty body is `{}`.
/// Unknown fields are refused (nothing accepted then dropped).
pub fn json_to_proto(desc: &MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, String> {
    let json: &[u8] = if json.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        json
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let msg = DynamicMessage::deserialize(desc.clone(), &mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(msg.encode_to_vec())
}

/// A message's protobuf bytes as proto3 JSON (camelCase names, 64-bit integers as strings,
/// enums by name, default values left out).
pub fn proto_to_json(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let msg = DynamicMessage::decode(desc.clone(), bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
    let mut ser = serde_json::Serializer::new(&mut out);
    msg.serialize_with_options(&mut ser, &SerializeOptions::new())
        .map_err(|e| e.to_string())?;
    Ok(out)
}
