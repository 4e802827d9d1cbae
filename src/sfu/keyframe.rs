//! Keyframe detection on RTP payloads, for starting a subscriber or switching simulcast layers.
//!
//! Only the payload descriptor and the codec's first header bytes are read: with end-to-end
//! encryption those stay in clear (VP8 frame tag, H.264 NAL headers, the VP9 descriptor).
//! Every function is total: truncated or garbage payloads give `false`.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    Other,
}

impl VideoCodec {
    /// From a MIME type such as `video/VP8`.
    pub fn from_mime(mime: &str) -> Self {
        let name = mime.rsplit('/').next().unwrap_or(mime);
        if name.eq_ignore_ascii_case("vp8") {
            VideoCodec::Vp8
        } else if name.eq_ignore_ascii_case("vp9") {
            VideoCodec::Vp9
        } else if name.eq_ignore_ascii_case("h264") {
            VideoCodec::H264
        } else {
            VideoCodec::Other
        }
    }
}

/// Whether this packet starts a keyframe. For codecs we cannot parse, every packet counts, so
/// forwarding never stalls on them (the decoder then asks for a keyframe itself).
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8(payload),
        VideoCodec::Vp9 => vp9(payload),
        VideoCodec::H264 => h264(payload),
        VideoCodec::Other => true,
    }
}

/// RFC 7741: descriptor, then the VP8 frame tag whose lowest bit is 0 on keyframes.
fn vp8(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let Some(&ext) = payload.get(at) else {
            return false;
        };
        at += 1;
        if ext & 0x80 != 0 {
            let Some(&picture_id) = payload.get(at) else {
                return false;
            };
            at += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1;
        }
        if ext & 0x30 != 0 {
            at += 1;
        }
    }
    payload.get(at).is_some_and(|tag| tag & 0x01 == 0)
}

/// RFC 9628 descriptor: not inter-predicted (P = 0) and beginning of a frame (B = 1).
fn vp9(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|d| d & 0x40 == 0 && d & 0x08 != 0)
}

/// RFC 6184: an IDR slice or an SPS, alone, aggregated (STAP-A) or at the start of a fragment (FU-A).
fn h264(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        5 | 7 => true,
        24 => {
            let mut at = 1;
            while at + 2 < payload.len() {
                let size = u16::from_be_bytes([payload[at], payload[at + 1]]) as usize;
                at += 2;
                if let Some(&nal) = payload.get(at)
                    && matches!(nal & 0x1f, 5 | 7)
                {
                    return true;
                }
                at += size;
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, 5 | 7)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8() {
        // S=1, PID=0, no extension; frame tag bit 0 clear = keyframe.
        assert!(is_keyframe(VideoCodec::Vp8, &[0x10, 0x00]));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x10, 0x01]));
        // Not the start of a partition.
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x00, 0x00]));
        // X=1, I=1 with a 15-bit picture id, then the tag.
        assert!(is_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x00]
        ));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x90, 0x80, 0x81]));
    }

    #[test]
    fn h264() {
        assert!(is_keyframe(VideoCodec::H264, &[0x65]));
        assert!(is_keyframe(VideoCodec::H264, &[0x67, 0x42]));
        assert!(!is_keyframe(VideoCodec::H264, &[0x41]));
        // STAP-A with SPS.
        assert!(is_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68]
        ));
        // FU-A start of an IDR; continuation is not a start.
        assert!(is_keyframe(VideoCodec::H264, &[0x7c, 0x85]));
        assert!(!is_keyframe(VideoCodec::H264, &[0x7c, 0x05]));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264] {
                let _ = is_keyframe(codec, &bytes);
            }
        }
        assert_eq!(VideoCodec::from_mime("video/VP8"), VideoCodec::Vp8);
        assert_eq!(VideoCodec::from_mime("video/h264"), VideoCodec::H264);
    }
}
