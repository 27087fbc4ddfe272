// The gateway's link to the speaker: gobgpd not answering yet at start is
// not a loss (info), while losing it after it answered is (warn), and a
// loss forgets what was advertised and the peers' states.
import test from "ava";
import { EventEmitter } from "node:events";
import { SpeakerLink } from "../../daemon/speaker-link.js";
import type { GatewayEvents } from "../../daemon/events.js";
import type { Logger } from "../../daemon/log.js";
import { FakeSpeaker } from "../helpers/fake-speaker.js";

function recordingLog() {
  const lines: { level: string; msg: string }[] = [];
  const at =
    (level: string) =>
    (_obj: object, msg: string): void =>
      void lines.push({ level, msg });
  const log = {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
  } as unknown as Logger;
  return { log, lines };
}

test("gobgpd not reachable before it ever answered is waited for; lost after that is a warning", async (t) => {
  const { log, lines } = recordingLog();
  const speaker = new FakeSpeaker();
  const link = new SpeakerLink({
    log,
    events: new EventEmitter<GatewayEvents>(),
    runDir: "/nonexistent",
    config: () => ({}) as never,
    trigger: () => {},
    bfdDown: () => new Set(),
    onEstablished: () => {},
    draining: () => false,
    connect: () => speaker,
  });
  // As the real client does when the socket is not up yet, before any ready.
  const started = link.start({ asn: 65001, routerId: "10.0.0.2", peers: [] } as never);
  speaker.emit("disconnected", "gobgpd at unix:///x is not reachable");
  await started;
  await new Promise((r) => setImmediate(r)); // the first "ready"
  t.deepEqual(
    lines.filter((l) => l.level === "warn"),
    [],
  );
  t.true(lines.some((l) => l.level === "info" && l.msg === "waiting for gobgpd"));
  speaker.emit("disconnected", "lost connection to gobgpd at unix:///x");
  t.deepEqual(
    lines.filter((l) => l.level === "warn").map((l) => l.msg),
    ["lost gobgpd"],
  );
  t.deepEqual(link.advertised, []);
  t.is(link.peerStates.size, 0);
});
