// One call participant in a page, driven by run.mjs through window.rtcbox.
// Everything here uses livekit-client the way Element Call does (same Room options by default),
// and keeps a timeline of SDK events so a failed run explains itself.
'use strict';

(() => {
  const LK = window.LivekitClient;
  const { Room, RoomEvent, Track, VideoPresets, AudioPresets, ScreenSharePresets } = LK;
  const started = performance.now();
  const since = () => Math.round(performance.now() - started);

  // Element Call's defaults (src/livekit/options.ts), minus its own reconnect policy object.
  function elementCallOptions() {
    return {
      adaptiveStream: true,
      dynacast: true,
      videoCaptureDefaults: { resolution: VideoPresets.h720.resolution },
      publishDefaults: {
        audioPreset: AudioPresets.music,
        dtx: true,
        red: false,
        forceStereo: false,
        simulcast: true,
        videoSimulcastLayers: [VideoPresets.h180, VideoPresets.h360],
        screenShareEncoding: ScreenSharePresets.h1080fps30.encoding,
        stopMicTrackOnMute: false,
        videoCodec: 'vp8',
        videoEncoding: VideoPresets.h720.encoding,
        backupCodec: { codec: 'vp8', encoding: VideoPresets.h720.encoding },
      },
      stopLocalTrackOnUnpublish: true,
      disconnectOnPageLeave: true,
      webAudioMix: false,
    };
  }

  const events = [];
  const errors = [];
  let room = null;

  function note(event, detail) {
    const entry = { t: since(), event };
    if (detail !== undefined) entry.detail = detail;
    events.push(entry);
    if (events.length > 500) events.splice(0, events.length - 500);
  }

  function describeError(e) {
    if (!e || typeof e !== 'object') return { message: String(e) };
    const out = { name: e.name, message: e.message };
    for (const key of ['reason', 'reasonName', 'status', 'code']) {
      if (e[key] !== undefined) out[key] = e[key];
    }
    if (e.context !== undefined) {
      try { out.context = JSON.parse(JSON.stringify(e.context)); } catch { out.context = String(e.context); }
    }
    return out;
  }

  const disconnectReasonName = (r) => (r === undefined ? undefined : (LK.DisconnectReason[r] ?? r));

  function trackInfo(pub) {
    return {
      sid: pub.trackSid, kind: pub.kind, source: pub.source, name: pub.trackName,
      subscribed: pub.isSubscribed, muted: pub.isMuted, mimeType: pub.mimeType,
      encrypted: pub.isEncrypted,
      streamState: pub.track?.streamState,
    };
  }

  function attach(track, participant) {
    const element = track.attach();
    element.dataset.identity = participant.identity;
    element.dataset.kind = track.kind;
    if (track.kind === Track.Kind.Video) {
      element.muted = true;
      element.playsInline = true;
    }
    document.getElementById('media').appendChild(element);
  }

  function wire(r) {
    r.on(RoomEvent.SignalConnected, () => note('signalConnected'))
      .on(RoomEvent.Connected, () => note('connected'))
      .on(RoomEvent.ConnectionStateChanged, (s) => note('connectionState', s))
      .on(RoomEvent.Reconnecting, () => note('reconnecting'))
      .on(RoomEvent.SignalReconnecting, () => note('signalReconnecting'))
      .on(RoomEvent.Reconnected, () => note('reconnected'))
      .on(RoomEvent.Disconnected, (reason) => {
        const name = disconnectReasonName(reason);
        note('disconnected', name);
        if (!stopping) errors.push(`disconnected: ${name}`);
      })
      .on(RoomEvent.ParticipantConnected, (p) => note('participantConnected', p.identity))
      .on(RoomEvent.ParticipantDisconnected, (p) => note('participantDisconnected', p.identity))
      .on(RoomEvent.TrackPublished, (pub, p) => note('trackPublished', `${p.identity} ${pub.kind} ${pub.source}`))
      .on(RoomEvent.TrackSubscribed, (track, pub, p) => {
        note('trackSubscribed', `${p.identity} ${track.kind} ${pub.source} ${pub.mimeType ?? ''}`.trim());
        attach(track, p);
      })
      .on(RoomEvent.TrackSubscriptionFailed, (sid, p, err) => {
        note('trackSubscriptionFailed', `${p?.identity} ${sid} ${err ?? ''}`);
        errors.push(`track subscription failed: ${p?.identity} ${sid} ${err ?? ''}`);
      })
      .on(RoomEvent.TrackUnsubscribed, (track, pub, p) => {
        note('trackUnsubscribed', `${p.identity} ${track.kind}`);
        track.detach().forEach((el) => el.remove());
      })
      .on(RoomEvent.TrackMuted, (pub, p) => note('trackMuted', `${p.identity} ${pub.kind}`))
      .on(RoomEvent.TrackUnmuted, (pub, p) => note('trackUnmuted', `${p.identity} ${pub.kind}`))
      .on(RoomEvent.TrackStreamStateChanged, (pub, state, p) => note('trackStreamState', `${p.identity} ${pub.kind} ${state}`))
      .on(RoomEvent.TrackSubscriptionStatusChanged, (pub, status, p) => note('trackSubscriptionStatus', `${p.identity} ${pub.kind} ${status}`))
      .on(RoomEvent.LocalTrackPublished, (pub) => note('localTrackPublished', `${pub.kind} ${pub.source} ${pub.trackSid}`))
      .on(RoomEvent.LocalTrackUnpublished, (pub) => note('localTrackUnpublished', `${pub.kind} ${pub.source}`))
      .on(RoomEvent.MediaDevicesError, (e) => {
        note('mediaDevicesError', describeError(e));
        errors.push(`media devices error: ${e?.message ?? e}`);
      })
      .on(RoomEvent.AudioPlaybackStatusChanged, () => note('audioPlayback', r.canPlaybackAudio))
      .on(RoomEvent.EncryptionError, (e) => errors.push(`encryption error: ${e?.message ?? e}`));
  }

  let stopping = false;

  // Connects and returns {ok, error?}; never throws, so the runner always gets an answer.
  async function connect(wsUrl, token, opts = {}) {
    const options = opts.profile === 'default' ? {} : elementCallOptions();
    Object.assign(options, opts.roomOptions ?? {});
    if (opts.publishDefaults) {
      options.publishDefaults = Object.assign({}, options.publishDefaults, opts.publishDefaults);
    }
    // End-to-end encryption with one shared key (Element Call derives per-participant keys; the
    // frames on the wire look the same to an SFU).
    let keyProvider = null;
    if (opts.e2eeKey) {
      keyProvider = new LK.ExternalE2EEKeyProvider();
      options.e2ee = { keyProvider, worker: new Worker('/livekit-client.e2ee.worker.js') };
    }
    room = new Room(options);
    window.room = room; // for poking at it by hand with a headed browser
    wire(room);
    const connectOptions = Object.assign({ autoSubscribe: true }, opts.connectOptions ?? {});
    note('connect', { wsUrl, options: Object.keys(options), connectOptions });
    try {
      if (keyProvider) {
        await keyProvider.setKey(opts.e2eeKey);
        await room.setE2EEEnabled(true);
      }
      await room.connect(wsUrl, token, connectOptions);
      note('connectResolved', { room: room.name, serverInfo: room.serverInfo });
      return { ok: true, localIdentity: room.localParticipant.identity, serverInfo: room.serverInfo ?? null };
    } catch (e) {
      const error = describeError(e);
      note('connectFailed', error);
      errors.push(`connect failed: ${error.name}: ${error.message}` +
        (error.reasonName ? ` (reason ${error.reasonName}${error.status ? `, status ${error.status}` : ''})` : ''));
      return { ok: false, error };
    }
  }

  async function publish() {
    try {
      await room.localParticipant.enableCameraAndMicrophone();
      return { ok: true };
    } catch (e) {
      const error = describeError(e);
      note('publishFailed', error);
      errors.push(`publish failed: ${error.name}: ${error.message}`);
      return { ok: false, error };
    }
  }

  function state() {
    if (!room) return { connectionState: 'none', remote: [], local: [] };
    return {
      connectionState: room.state,
      localIdentity: room.localParticipant?.identity,
      local: [...room.localParticipant.trackPublications.values()].map(trackInfo),
      remote: [...room.remoteParticipants.values()].map((p) => ({
        identity: p.identity, sid: p.sid, tracks: [...p.trackPublications.values()].map(trackInfo),
      })),
      canPlaybackAudio: room.canPlaybackAudio,
      e2eeEnabled: room.isE2EEEnabled,
    };
  }

  // The stats of one RTP stream plus the codec and transport it references.
  function summarise(report, type) {
    const out = [];
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type !== type) return;
      const codec = byId.get(s.codecId);
      const transport = byId.get(s.transportId);
      const pair = transport && byId.get(transport.selectedCandidatePairId);
      const remoteCandidate = pair && byId.get(pair.remoteCandidateId);
      const pick = (keys) => Object.fromEntries(keys.filter((k) => s[k] !== undefined).map((k) => [k, s[k]]));
      out.push({
        kind: s.kind, ssrc: s.ssrc, rid: s.rid, mid: s.mid, mimeType: codec?.mimeType,
        ...pick(type === 'inbound-rtp'
          ? ['packetsReceived', 'bytesReceived', 'packetsLost', 'nackCount', 'pliCount', 'firCount',
             'framesReceived', 'framesDecoded', 'keyFramesDecoded', 'framesDropped', 'frameWidth',
             'frameHeight', 'framesPerSecond', 'decoderImplementation', 'totalSamplesReceived',
             'concealedSamples', 'audioLevel', 'jitter']
          : ['packetsSent', 'bytesSent', 'framesEncoded', 'frameWidth', 'frameHeight',
             'qualityLimitationReason', 'encoderImplementation', 'active', 'nackCount', 'pliCount',
             'retransmittedPacketsSent']),
        candidate: remoteCandidate
          ? `${remoteCandidate.protocol} ${remoteCandidate.address ?? remoteCandidate.ip}:${remoteCandidate.port} ${remoteCandidate.candidateType}`
          : undefined,
        dtlsState: transport?.dtlsState,
      });
    });
    return out;
  }

  async function stats() {
    const result = { t: since(), inbound: [], outbound: [] };
    if (!room) return result;
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) {
        const track = pub.track;
        if (!track) continue;
        try {
          const report = await track.getRTCStatsReport();
          if (!report) continue;
          for (const s of summarise(report, 'inbound-rtp')) {
            result.inbound.push({ identity: p.identity, source: pub.source, trackSid: pub.trackSid, ...s });
          }
        } catch (e) {
          result.inbound.push({ identity: p.identity, source: pub.source, error: String(e) });
        }
      }
    }
    for (const pub of room.localParticipant.trackPublications.values()) {
      const track = pub.track;
      if (!track) continue;
      try {
        const report = await track.getRTCStatsReport();
        if (!report) continue;
        for (const s of summarise(report, 'outbound-rtp')) {
          result.outbound.push({ source: pub.source, trackSid: pub.trackSid, ...s });
        }
      } catch (e) {
        result.outbound.push({ source: pub.source, error: String(e) });
      }
    }
    return result;
  }

  // Media without a server: proves the fake devices and the SDK's capture path work here.
  async function localTracks() {
    const tracks = await LK.createLocalTracks({ audio: true, video: true });
    const out = tracks.map((t) => ({
      kind: t.kind, source: t.source, readyState: t.mediaStreamTrack.readyState,
      label: t.mediaStreamTrack.label, settings: t.mediaStreamTrack.getSettings(),
    }));
    tracks.forEach((t) => t.stop());
    return out;
  }

  // Camera and microphone sent between two RTCPeerConnections in this page, no server: proves
  // this Chromium encodes and decodes the fake media, and that stats() reads what it should.
  async function loopback(ms) {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    const a = new RTCPeerConnection();
    const b = new RTCPeerConnection();
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    stream.getTracks().forEach((t) => a.addTrack(t, stream));
    await a.setLocalDescription();
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription();
    await a.setRemoteDescription(b.localDescription);
    const sample = async () => {
      const out = [];
      for (const r of b.getReceivers()) out.push(...summarise(await r.getStats(), 'inbound-rtp'));
      return out;
    };
    const first = await sample();
    await new Promise((resolve) => setTimeout(resolve, ms));
    const last = await sample();
    stream.getTracks().forEach((t) => t.stop());
    a.close();
    b.close();
    return { first, last };
  }

  // Asks for one quality ('low', 'medium', 'high') of every video track `identity` publishes,
  // as a client does with adaptive stream off (UpdateTrackSettings with that quality).
  function setVideoQuality(identity, quality) {
    const q = { low: LK.VideoQuality.LOW, medium: LK.VideoQuality.MEDIUM, high: LK.VideoQuality.HIGH }[quality];
    const participant = [...room.remoteParticipants.values()].find((p) => p.identity === identity);
    const pubs = [...(participant?.trackPublications.values() ?? [])].filter((pub) => pub.kind === Track.Kind.Video);
    pubs.forEach((pub) => pub.setVideoQuality(q));
    note('setVideoQuality', `${identity} ${quality} (${pubs.length} tracks)`);
    return pubs.length;
  }

  async function disconnect() {
    stopping = true;
    if (room) await room.disconnect();
  }

  window.addEventListener('error', (e) => errors.push(`page error: ${e.message}`));
  window.addEventListener('unhandledrejection', (e) => errors.push(`unhandled rejection: ${e.reason?.message ?? e.reason}`));

  window.rtcbox = {
    version: LK.version,
    protocolVersion: LK.protocolVersion,
    setLogLevel: (level) => LK.setLogLevel(level),
    connect, publish, state, stats, localTracks, loopback, setVideoQuality, disconnect,
    events: () => events,
    errors: () => errors,
  };
})();
