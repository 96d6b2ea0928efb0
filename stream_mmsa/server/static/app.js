// The browser side of `stream-mmsa serve`.
//
// Self view (default): the camera and microphone go to the server over WebRTC and
// sentiment events come back on the `events` data channel. Whatever devices exist and
// are allowed are used: audio only without a camera, video only without a microphone.
// What retrying cannot fix (permission denied, no device at all, a plain-http page from
// another machine, a bad token) is said once and the page waits for the user; a
// dropped connection is retried with backoff.
// Room view (?room=NAME&view=room): no media of its own; every participant's events
// from /events, one line each.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const room = params.get("room");
const participant = params.get("participant");
const roomView = params.get("view") === "room";
const $ = (id) => document.getElementById(id);

const CHART_SECONDS = 60;
const COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#9c36b5", "#c2255c", "#0b7285", "#e67700", "#5c940d"];
const KINDS = { audio: { picker: "mic", name: "microphone" }, video: { picker: "camera", name: "camera" } };
const MAX_RESUME = 63; // after= parameters per subscription (the hub takes 64 names with room=)

let neutralBand = 0.5; // the server's own (page.json) once it has answered
let iceServers = [];
const series = new Map(); // participant (else session) -> {name, color, points, card, ended}
const lastSeq = new Map(); // session -> last seq seen, to resume the room's event stream
let stream = null;
let pc = null;
let attempt = 0;
let retryTimer = null;
let running = false;

/** What retrying cannot fix: said once, then the page waits for the user. */
class Final extends Error {}

function setConnection(state, text) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = text || state;
}

function showNotice(text, final = false) {
  $("notice").textContent = text;
  $("notice").toggleAttribute("data-final", final);
}

function logLine(text) {
  const line = document.createElement("div");
  line.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("log").prepend(line);
  while ($("log").childElementCount > 50) $("log").lastChild.remove();
}

function element(tag, text = "", className = "") {
  const el = document.createElement(tag);
  el.textContent = text;
  if (className) el.className = className;
  return el;
}

async function pageConfig() {
  const response = await fetch("/page.json", { headers: { Authorization: `Bearer ${token}` } });
  const body = await response.json();
  if (response.status === 401 || response.status === 403) {
    throw new Final(
      `The server refused this page (${body.message}). Open the address \`stream-mmsa serve\` ` +
        "printed: it ends in ?token=…",
    );
  }
  if (!response.ok) throw new Error(`${response.status} ${body.error}: ${body.message}`);
  neutralBand = body.neutral_band;
  iceServers = body.ice_servers;
}

// --- media -------------------------------------------------------------------------

function constraint(kind) {
  const choice = $(KINDS[kind].picker).value;
  if (choice === "none") return false;
  const base = kind === "video" ? { width: 640, height: 480 } : {};
  if (choice) return { ...base, deviceId: { exact: choice } };
  return kind === "video" ? base : true;
}

function reason(error) {
  if (error.name === "NotAllowedError" || error.name === "SecurityError") return "permission denied";
  if (error.name === "NotFoundError" || error.name === "OverconstrainedError") return "none found";
  if (error.name === "NotReadableError") return "in use by another program";
  return `${error.name}: ${error.message}`;
}

async function media() {
  if (stream && stream.active) return stream; // else first call, or devices lost (unplugged, revoked)
  if (!window.isSecureContext || !navigator.mediaDevices) {
    throw new Final(
      "This page was opened over plain http from another machine, and browsers give such pages " +
        "no camera or microphone. Serve it over HTTPS (stream-mmsa serve --tls-cert … " +
        "--tls-key …) or open it on the server itself (localhost). " +
        "The room view (&view=room) works from here.",
    );
  }
  const wanted = Object.keys(KINDS).filter((kind) => constraint(kind) !== false);
  if (!wanted.length) throw new Final("Choose a microphone or a camera, then press Start.");
  const failed = {};
  let got = new MediaStream();
  try {
    got = await navigator.mediaDevices.getUserMedia(
      Object.fromEntries(wanted.map((kind) => [kind, constraint(kind)])),
    );
  } catch (error) {
    // Both at once failed: what works alone is used (no camera, a denied camera ...).
    for (const kind of wanted) {
      try {
        const alone = await navigator.mediaDevices.getUserMedia({ [kind]: constraint(kind) });
        alone.getTracks().forEach((track) => got.addTrack(track));
      } catch (kindError) {
        failed[kind] = kindError;
      }
    }
  }
  const problems = Object.entries(failed).map(([kind, e]) => `${KINDS[kind].name}: ${reason(e)}`);
  if (!got.getTracks().length) {
    const denied = Object.values(failed).some((e) => reason(e) === "permission denied");
    throw new Final(
      `No camera or microphone to use (${problems.join("; ")}). ` +
        (denied
          ? "Allow them for this site in the browser's site settings (the icon left of the " +
            "address), then press Start."
          : "Connect one, then press Start."),
    );
  }
  stream = got;
  const kinds = stream.getTracks().map((track) => track.kind);
  document.body.dataset.media = [...new Set(kinds)].sort().join("+");
  $("preview").srcObject = stream;
  $("preview").hidden = !kinds.includes("video");
  const only = kinds.includes("video") ? "video" : "audio";
  showNotice(problems.length ? `${only} only — ${problems.join("; ")}` : "");
  await listDevices();
  updateButtons();
  return stream;
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, { picker, name }] of Object.entries(KINDS)) {
    const select = $(picker);
    const track = stream && stream.getTracks().find((t) => t.kind === kind);
    const current = track ? track.getSettings().deviceId : select.value;
    const found = devices.filter((d) => d.kind === `${kind}input` && d.deviceId);
    const option = (value, text) => Object.assign(element("option", text), { value });
    select.replaceChildren(
      option("", `default ${name}`),
      ...found.map((d, i) => option(d.deviceId, d.label || `${name} ${i + 1}`)),
      option("none", `no ${name}`),
    );
    select.value = [...select.options].some((o) => o.value === current) ? current : "";
  }
}

/** A picker changed: swap the track in place, or reconnect when a kind comes or goes. */
async function choose(kind) {
  const sender = pc && pc.getSenders().find((s) => s.track && s.track.kind === kind);
  const wanted = constraint(kind);
  if (!sender || wanted === false) {
    if (running) restart();
    return;
  }
  try {
    const [track] = (await navigator.mediaDevices.getUserMedia({ [kind]: wanted })).getTracks();
    const old = sender.track;
    track.enabled = old.enabled; // a muted microphone stays muted
    await sender.replaceTrack(track);
    stream.removeTrack(old);
    old.stop();
    stream.addTrack(track);
    logLine(`${KINDS[kind].name}: ${track.label}`);
  } catch (error) {
    showNotice(`${KINDS[kind].name}: ${reason(error)}`);
  }
}

function toggleTrack(kind) {
  const track = stream && stream.getTracks().find((t) => t.kind === kind);
  if (!track) return;
  track.enabled = !track.enabled;
  logLine(`${KINDS[kind].name} ${track.enabled ? "on" : "off"}`);
  updateButtons();
}

function updateButtons() {
  $("startstop").textContent = running ? "Stop" : "Start";
  const labels = { mute: ["Mute microphone", "Unmute microphone"], "camera-off": ["Turn camera off", "Turn camera on"] };
  for (const [id, kind] of [["mute", "audio"], ["camera-off", "video"]]) {
    const track = stream && stream.getTracks().find((t) => t.kind === kind);
    const off = Boolean(track && !track.enabled);
    $(id).disabled = !track;
    $(id).setAttribute("aria-pressed", String(off));
    $(id).textContent = labels[id][off ? 1 : 0];
  }
}

// --- connection ----------------------------------------------------------------------

function iceGathered(peer) {
  // aiortc does not trickle: the offer must carry its candidates.
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (peer.iceGatheringState === "complete") resolve(); };
    peer.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);
  });
}

async function connect() {
  setConnection("connecting", attempt ? `reconnecting (attempt ${attempt})` : "connecting");
  await pageConfig();
  const local = await media();
  if (!running) return;
  const peer = (pc = new RTCPeerConnection({ iceServers }));
  local.getTracks().forEach((track) => peer.addTrack(track, local));
  const channel = peer.createDataChannel("events");
  channel.onmessage = (message) => onEvent(JSON.parse(message.data));
  channel.onclose = () => peer === pc && retry("event channel closed");
  peer.onconnectionstatechange = () => {
    if (peer !== pc) return;
    if (peer.connectionState === "connected") {
      attempt = 0;
      setConnection("connected");
    } else if (["failed", "closed"].includes(peer.connectionState)) {
      retry(`connection ${peer.connectionState}`);
    }
  };
  await peer.setLocalDescription(await peer.createOffer());
  await iceGathered(peer);
  const body = { sdp: peer.localDescription.sdp, type: "offer" };
  if (room) body.room = room;
  if (participant) body.participant = participant;
  const response = await fetch("/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) {
    const message = `${response.status} ${answer.error}: ${answer.message}`;
    throw [400, 401, 403].includes(response.status) ? new Final(message) : new Error(message);
  }
  if (peer !== pc) return; // stopped meanwhile
  document.body.dataset.session = answer.session;
  logLine(`session ${answer.session}`);
  await peer.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
}

/** The room's events over /events, resuming each known session after its last seq. */
async function watch() {
  if (!room) throw new Final("The room view needs a room: add &room=NAME to the address.");
  setConnection("connecting", attempt ? `reconnecting (attempt ${attempt})` : "connecting");
  await pageConfig();
  const query = new URLSearchParams({ room, token });
  [...lastSeq].slice(-MAX_RESUME).forEach(([session, seq]) => query.append("after", `${session}:${seq}`));
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/events?${query}`);
  socket.onopen = () => {
    attempt = 0;
    setConnection("connected", `watching room ${room}`);
  };
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onclose = () => retry("event stream closed");
}

function stopSession() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (pc) { const old = pc; pc = null; old.close(); }
  if (stream) { stream.getTracks().forEach((track) => track.stop()); stream = null; }
  $("preview").srcObject = null;
  $("preview").hidden = true;
  updateButtons();
}

function retry(why) {
  if (retryTimer || !running) return;
  if (pc) { const old = pc; pc = null; old.close(); }
  const delay = Math.min(10, 2 ** attempt);
  attempt += 1;
  setConnection("reconnecting", `reconnecting in ${delay} s (${why})`);
  logLine(`connection lost: ${why}`);
  retryTimer = setTimeout(() => {
    retryTimer = null;
    start();
  }, delay * 1000);
}

function fail(message) {
  running = false;
  stopSession();
  setConnection("error", "stopped");
  showNotice(message, true);
  logLine(message);
}

function start() {
  (roomView ? watch() : connect()).catch((error) => {
    if (!running) return;
    if (error instanceof Final) fail(error.message);
    else retry(error.message);
  });
}

function begin() {
  running = true;
  attempt = 0;
  showNotice("");
  updateButtons();
  start();
}

function restart() {
  stopSession();
  begin();
}

function toggleRunning() {
  if (!running) return begin();
  running = false;
  stopSession();
  setConnection("stopped");
  logLine("stopped");
}

// --- events ----------------------------------------------------------------------------

function lineFor(event) {
  const key = event.participant || event.session;
  if (!series.has(key)) {
    const name = event.participant || `session ${event.session}`;
    series.set(key, { name, color: COLORS[series.size % COLORS.length], points: [], card: null, ended: false });
    $("chart").dataset.lines = String(series.size);
  }
  return series.get(key);
}

function onEvent(event) {
  lastSeq.set(event.session, event.seq);
  const line = lineFor(event);
  if (event.type === "sentiment") {
    const { score, label } = event.sentiment;
    line.points.push({ t: performance.now() / 1000, score, label });
    line.ended = false;
    const chart = $("chart");
    chart.dataset.points = String(Number(chart.dataset.points) + 1);
    if (roomView) showParticipant(line, event);
    else showSelf(event);
    drawChart();
  } else if (event.type === "transcript") {
    if (!event.final) {
      $("interim").textContent = roomView ? `${line.name}: ${event.text}` : event.text;
    } else if (roomView) {
      addTurn(line, event.text);
      $("interim").textContent = "";
    } else {
      $("final").textContent = `${$("final").textContent} ${event.text}`.trim().slice(-600);
      $("interim").textContent = "";
    }
  } else if (event.type === "status") {
    logLine(`${line.name}: ${event.modality} ${event.state}${event.reason ? ` (${event.reason})` : ""}`);
  } else if (event.type === "session") {
    logLine(`${line.name}: session ${event.state} (${event.reason})`);
    if (event.state === "ended") {
      line.ended = true;
      if (line.card) line.card.toggleAttribute("data-ended", true);
    }
  }
}

/** Room view: final words go to the speaker's current turn; a new speaker starts a turn. */
function addTurn(line, text) {
  const turns = $("final");
  const last = turns.lastElementChild;
  if (last && last.dataset.name === line.name) {
    last.lastChild.textContent += ` ${text}`;
    return;
  }
  const turn = element("div", "", "turn");
  turn.dataset.name = line.name;
  const who = element("strong", `${line.name}: `);
  who.style.color = line.color;
  turn.append(who, element("span", text));
  turns.append(turn);
  while (turns.childElementCount > 12) turns.firstElementChild.remove();
}

function signed(score) {
  return `${score >= 0 ? "+" : ""}${score.toFixed(2)}`;
}

function showSelf(event) {
  const { score, label, confidence } = event.sentiment;
  $("now").textContent = `${signed(score)} ${label}`;
  $("now").dataset.label = label;
  $("now").title = `confidence ${confidence.toFixed(2)}`;
  for (const [name, report] of Object.entries(event.modalities)) {
    const badge = $(`modality-${name}`);
    badge.dataset.state = report.state;
    badge.textContent = `${name}: ${report.state}${report.action === "used" ? "" : ` (${report.action})`}`;
  }
  showExpression(event.modalities.vision && event.modalities.vision.expression);
}

function showExpression(expression) {
  const el = $("expression");
  el.dataset.label = expression ? expression.label : "";
  if (!expression) {
    el.textContent = "no face in this window";
    return;
  }
  const rows = Object.entries(expression.probs).sort((a, b) => b[1] - a[1]);
  el.replaceChildren(
    ...rows.flatMap(([name, prob]) => {
      const track = element("div");
      const bar = element("div", "", "bar");
      bar.style.width = `${(prob * 100).toFixed(1)}%`;
      track.append(bar);
      return [element("span", name, name === expression.label ? "top" : ""), track, element("span", prob.toFixed(2))];
    }),
  );
}

function showParticipant(line, event) {
  if (!line.card) {
    line.card = element("div", "", "participant");
    line.card.style.setProperty("--color", line.color);
    line.card.append(element("strong", line.name, "name"), element("div", "", "score"), element("div", "", "detail"));
    line.card.dataset.name = line.name;
    $("participants").append(line.card);
  }
  const { score, label, confidence } = event.sentiment;
  const expression = event.modalities.vision && event.modalities.vision.expression;
  line.card.toggleAttribute("data-ended", false);
  line.card.dataset.label = label;
  line.card.querySelector(".score").textContent = `${signed(score)} ${label}`;
  line.card.querySelector(".detail").textContent =
    `confidence ${confidence.toFixed(2)} · face: ${expression ? expression.label : "none"}`;
  $("now").textContent = `${series.size} participant${series.size === 1 ? "" : "s"} in ${room}`;
}

// --- chart -------------------------------------------------------------------------------

/** The canvas's pixels follow its box × devicePixelRatio, so lines stay sharp at any size. */
function resizeChart() {
  const canvas = $("chart");
  const box = canvas.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(box.width * ratio));
  canvas.height = Math.max(1, Math.round(box.height * ratio));
  drawChart();
}

function drawChart() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.width / ratio;
  const height = canvas.height / ratio;
  const [left, right, top, bottom] = [30, 10, 10, 24];
  const now = performance.now() / 1000;
  const x = (t) => left + (1 - (now - t) / CHART_SECONDS) * (width - left - right);
  const y = (score) => top + ((3 - score) / 6) * (height - top - bottom);
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";

  ctx.fillStyle = "#eceff3"; // the neutral band: |score| < neutral_band is labelled neutral
  ctx.fillRect(left, y(neutralBand), width - left - right, y(-neutralBand) - y(neutralBand));
  ctx.fillStyle = "#8a93a3";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ctx.fillText("neutral", width - right - 4, y(0));
  ctx.strokeStyle = "#d0d5dd";
  for (const level of [-3, -2, -1, 0, 1, 2, 3]) {
    ctx.beginPath();
    ctx.moveTo(left, y(level));
    ctx.lineTo(width - right, y(level));
    ctx.lineWidth = level === 0 ? 1.2 : 0.5;
    ctx.stroke();
    ctx.fillText(level > 0 ? `+${level}` : String(level), left - 5, y(level));
  }
  ctx.textAlign = "center"; // the time axis: seconds before now
  ctx.textBaseline = "top";
  for (let ago = 0; ago <= CHART_SECONDS; ago += 10) {
    const at = x(now - ago);
    ctx.beginPath();
    ctx.moveTo(at, height - bottom);
    ctx.lineTo(at, height - bottom + 4);
    ctx.lineWidth = 1;
    ctx.stroke();
    ctx.fillText(ago ? `−${ago} s` : "now", Math.min(at, width - right - 10), height - bottom + 6);
  }

  let legend = left + 6;
  for (const line of series.values()) {
    while (line.points.length && now - line.points[0].t > CHART_SECONDS) line.points.shift();
    ctx.beginPath();
    line.points.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.score)) : ctx.moveTo(x(p.t), y(p.score))));
    ctx.strokeStyle = line.color;
    ctx.lineWidth = 2;
    ctx.stroke();
    for (const p of line.points) {
      ctx.fillStyle = p.label === "positive" ? "#16a34a" : p.label === "negative" ? "#dc2626" : "#6b7280";
      ctx.beginPath();
      ctx.arc(x(p.t), y(p.score), 2.5, 0, 2 * Math.PI);
      ctx.fill();
    }
    if (series.size > 1) { // a legend once lines need telling apart
      ctx.fillStyle = line.color;
      ctx.fillRect(legend, top + 2, 10, 10);
      ctx.textAlign = "left";
      ctx.fillText(line.name, legend + 14, top + 1);
      legend += 24 + ctx.measureText(line.name).width;
    }
  }
}

// --- start -------------------------------------------------------------------------------

document.body.dataset.view = roomView ? "room" : "self";
$("startstop").onclick = toggleRunning;
$("mute").onclick = () => toggleTrack("audio");
$("camera-off").onclick = () => toggleTrack("video");
$("mic").onchange = () => choose("audio");
$("camera").onchange = () => choose("video");
new ResizeObserver(resizeChart).observe($("chart"));
setInterval(drawChart, 1000); // the time axis moves on between events
begin();
