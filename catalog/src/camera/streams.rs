//! Stream URLs of a channel: explicit per protocol, or derived from the media server's
//! URL templates.

use serde::{Deserialize, Serialize};

/// Stream URLs of a channel, explicit or derived from the media-server template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Streams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtsp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webrtc: Option<String>,
}

impl Streams {
    pub(crate) fn urls(&self) -> [(&'static str, &Option<String>); 5] {
        [
            ("rtsp", &self.rtsp),
            ("rtmp", &self.rtmp),
            ("flv", &self.flv),
            ("hls", &self.hls),
            ("webrtc", &self.webrtc),
        ]
    }

    /// Each URL given here, else the one of `fallback`.
    pub fn or(&self, fallback: &Streams) -> Streams {
        let pick = |own: &Option<String>, other: &Option<String>| own.clone().or(other.clone());
        Streams {
            rtsp: pick(&self.rtsp, &fallback.rtsp),
            rtmp: pick(&self.rtmp, &fallback.rtmp),
            flv: pick(&self.flv, &fallback.flv),
            hls: pick(&self.hls, &fallback.hls),
            webrtc: pick(&self.webrtc, &fallback.webrtc),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.urls().iter().all(|(_, url)| url.is_none())
    }
}

/// URL templates of the media server (ZLMediaKit-style) that plays GB/T 28181 streams.
/// `{device}` is the channel's parent device id (the channel's own id when it has none),
/// `{channel}` the channel id.
#[derive(Debug, Clone, Default)]
pub struct StreamTemplates(pub Streams);

impl StreamTemplates {
    pub fn derive(&self, channel: &str, parent: Option<&str>) -> Streams {
        let device = parent.unwrap_or(channel);
        let fill = |template: &Option<String>| {
            template
                .as_ref()
                .map(|t| t.replace("{device}", device).replace("{channel}", channel))
        };
        let t = &self.0;
        Streams {
            rtsp: fill(&t.rtsp),
            rtmp: fill(&t.rtmp),
            flv: fill(&t.flv),
            hls: fill(&t.hls),
            webrtc: fill(&t.webrtc),
        }
    }
}
