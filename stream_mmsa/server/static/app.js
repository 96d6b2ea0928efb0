// The browser side of `stream-mmsa serve`: camera and microphone to the server over
// WebRTC, sentiment events back on the `events` data channel, drawn as they arrive.
// Reconnects by itself (with backoff) whenever the connection or the channel drops.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const room = params.get("room");
const participant = params.get("participant");
const $ = (id) => document.getElementById(id);

const CHART_SECONDS = 60;
const points = []; // {t: seconds since page load, score, label}
let stream = null;
let pc = null;
let attempt = 0;
let retryTimer = null;

function setConnection(state, text) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = text || state;
}

function logLine(text) {
  const line = document.createElement("div");
  line.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("log").prepend(line);
  while ($("log").childElementCount > 50) $("log").lastChild.remove();
}

async function media() {
  if (!stream || !stream.active) { // first call, or the devices were lost (unplugged, revoked)
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
    $("preview").srcObject = stream;
  }
  return stream;
}

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
  const local = await media();
  const peer = (pc = new RTCPeerConnection());
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
    const error = new Error(`${response.status} ${answer.error}: ${answer.message}`);
    error.fatal = response.status === 401 || response.status === 403 || response.status === 400;
    throw error;
  }
  document.body.dataset.session = answer.session;
  logLine(`session ${answer.session}`);
  await peer.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
}

function retry(reason) {
  if (retryTimer) return;
  if (pc) { const old = pc; pc = null; old.close(); }
  const delay = Math.min(10, 2 ** attempt);
  attempt += 1;
  setConnection("reconnecting", `reconnecting in ${delay} s (${reason})`);
  logLine(`connection lost: ${reason}`);
  retryTimer = setTimeout(() => {
    retryTimer = null;
    start();
  }, delay * 1000);
}

function start() {
  connect().catch((error) => {
    if (error.fatal) {
      setConnection("error", error.message);
      logLine(error.message);
    } else {
      retry(error.message);
    }
  });
}

function onEvent(event) {
  if (event.type === "sentiment") {
    const { score, label, confidence } = event.sentiment;
    points.push({ t: performance.now() / 1000, score, label });
    $("now").textContent = `${score >= 0 ? "+" : ""}${score.toFixed(2)} ${label}`;
    $("now").dataset.label = label;
    $("now").title = `confidence ${confidence.toFixed(2)}`;
    for (const [name, report] of Object.entries(event.modalities)) {
      const badge = $(`modality-${name}`);
      badge.dataset.state = report.state;
      badge.textContent = `${name}: ${report.state}${report.action === "used" ? "" : ` (${report.action})`}`;
    }
    drawChart();
  } else if (event.type === "transcript") {
    if (event.final) {
      const text = `${$("final").textContent} ${event.text}`.trim();
      $("final").textContent = text.slice(-600);
      $("interim").textContent = "";
    } else {
      $("interim").textContent = event.text;
    }
  } else if (event.type === "status") {
    logLine(`${event.modality} ${event.state}${event.reason ? ` (${event.reason})` : ""}`);
  }
}

function drawChart() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const now = performance.now() / 1000;
  const x = (t) => width - ((now - t) / CHART_SECONDS) * width;
  const y = (score) => height / 2 - (score / 3) * (height / 2 - 8);
  while (points.length && now - points[0].t > CHART_SECONDS) points.shift();
  canvas.dataset.points = String(Number(canvas.dataset.points) + 1);
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = "#d0d5dd";
  ctx.fillStyle = "#8a93a3";
  ctx.font = "12px sans-serif";
  for (const level of [-3, -2, -1, 0, 1, 2, 3]) {
    ctx.beginPath();
    ctx.moveTo(0, y(level));
    ctx.lineTo(width, y(level));
    ctx.lineWidth = level === 0 ? 1.5 : 0.5;
    ctx.stroke();
    ctx.fillText(String(level), 4, y(level) - 2);
  }
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.score)) : ctx.moveTo(x(p.t), y(p.score))));
  ctx.strokeStyle = "#2f6fde";
  ctx.lineWidth = 2;
  ctx.stroke();
  for (const p of points) {
    ctx.fillStyle = p.label === "positive" ? "#16a34a" : p.label === "negative" ? "#dc2626" : "#6b7280";
    ctx.beginPath();
    ctx.arc(x(p.t), y(p.score), 3, 0, 2 * Math.PI);
    ctx.fill();
  }
}

start();
