[rtcbox_http]
title="rtcbox (signaling, MatrixRTC auth, HTTP)"
desc="rtcbox"
port_forward="yes"
dst.ports="8880/tcp"

[rtcbox_https]
title="rtcbox HTTPS with its own certificate, and TURN over TLS"
desc="rtcbox"
port_forward="yes"
dst.ports="8443/tcp"

[rtcbox_admin]
title="rtcbox admin panel (LAN only, do not forward)"
desc="rtcbox"
port_forward="no"
dst.ports="8089/tcp"

[rtcbox_media_udp]
title="rtcbox WebRTC media (UDP)"
desc="rtcbox"
port_forward="yes"
dst.ports="8882/udp"

[rtcbox_media_tcp]
title="rtcbox WebRTC media (ICE-TCP)"
desc="rtcbox"
port_forward="yes"
dst.ports="8881/tcp"

[rtcbox_turn_udp]
title="rtcbox TURN (UDP)"
desc="rtcbox"
port_forward="yes"
dst.ports="3478/udp"

[rtcbox_turn_tcp]
title="rtcbox TURN (TCP)"
desc="rtcbox"
port_forward="yes"
dst.ports="3478/tcp"

[rtcbox_turn_tls]
title="rtcbox TURN over TLS"
desc="rtcbox"
port_forward="yes"
dst.ports="5349/tcp"

[rtcbox_turn_relay]
title="rtcbox TURN relay ports (UDP)"
desc="rtcbox"
port_forward="yes"
dst.ports="49160:49200/udp"
