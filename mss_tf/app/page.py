"""The separation page (one self-contained HTML document: style and script inline, nothing
fetched from elsewhere) that mss_tf.app.server serves at /."""

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mss-tf: separate a song</title>
<link rel="icon" href="data:,">
<style>
body { font-family: sans-serif; margin: 2em auto; max-width: 900px; padding: 0 1em; }
#drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; color: #444; }
#drop.over { background: #eef; }
progress { width: 100%; height: 1.2em; }
.stem { border-top: 1px solid #ccc; padding: 0.6em 0; }
.stem img { max-width: 100%; display: block; margin: 0.4em 0; }
#error { color: #b00; white-space: pre-wrap; }
.note { color: #555; font-size: 0.9em; }
</style>
</head>
<body>
<h1>Separate a song</h1>
<p class="note" id="model">Loading the model's description...</p>
<div id="drop">
  <p>Drop an audio file here, or <input type="file" id="file" accept="audio/*,.wav,.flac,.mp3,.ogg,.m4a"></p>
  <p class="note">The file is sent to this computer's server only and never leaves the machine.</p>
</div>
<div id="status" hidden>
  <p id="status-text"></p>
  <progress id="progress" max="1"></progress>
</div>
<p id="error" role="alert"></p>
<div id="stems"></div>
<script>
"use strict";
var info = null;
var drop = document.getElementById("drop");
var fileInput = document.getElementById("file");
var statusBox = document.getElementById("status");
var statusText = document.getElementById("status-text");
var progressBar = document.getElementById("progress");
var errorBox = document.getElementById("error");
var stemsBox = document.getElementById("stems");

fetch("api/model").then(function (r) { return r.json(); }).then(function (data) {
  info = data;
  document.getElementById("model").textContent = "Model " + data.model + ": " + data.targets.join(", ") +
    " at " + data.sample_rate + " Hz; uploads up to " + data.max_upload_mb + " MB.";
});

function showError(message) { errorBox.textContent = message; }

function upload(file) {
  showError("");
  stemsBox.innerHTML = "";
  if (info && file.size > info.max_upload_mb * 1e6) {
    showError(file.name + " is larger than this server's limit of " + info.max_upload_mb + " MB.");
    return;
  }
  statusBox.hidden = false;
  statusText.textContent = "Uploading " + file.name + "...";
  progressBar.removeAttribute("value");
  fetch("api/jobs", {method: "POST", body: file, headers: {"X-Filename": encodeURIComponent(file.name)}})
    .then(function (r) { return r.json().then(function (body) { return {status: r.status, body: body}; }); })
    .then(function (answer) {
      if (answer.status !== 202) {
        statusBox.hidden = true;
        showError("The server refused " + file.name + " (HTTP " + answer.status + "): " + answer.body.error);
        return;
      }
      poll(answer.body.id);
    })
    .catch(function (err) { statusBox.hidden = true; showError("Upload failed: " + err); });
}

function poll(id) {
  fetch("api/jobs/" + id).then(function (r) { return r.json(); }).then(function (job) {
    if (job.state === "error") {
      statusBox.hidden = true;
      showError("Separation failed: " + job.error);
      return;
    }
    if (job.state === "done") {
      progressBar.value = 1;
      statusText.textContent = "Separated " + job.name + " (" + job.seconds_total.toFixed(1) + " s).";
      showStems(job);
      return;
    }
    if (job.progress === null) { progressBar.removeAttribute("value"); } else { progressBar.value = job.progress; }
    statusText.textContent = (job.state === "queued" ? "Waiting for the songs before it... " : "Separating " + job.name +
      ": " + job.seconds_done.toFixed(1) + (job.seconds_total ? " of " + job.seconds_total.toFixed(1) : "") + " s");
    setTimeout(function () { poll(id); }, 300);
  });
}

function showStems(job) {
  stemsBox.innerHTML = "";
  job.targets.forEach(function (target) {
    var base = "api/jobs/" + job.id + "/" + target;
    var box = document.createElement("div");
    box.className = "stem";
    box.dataset.target = target;
    var title = document.createElement("h2");
    title.textContent = target;
    var audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.src = base + ".flac";
    var image = document.createElement("img");
    image.src = base + ".png";
    image.alt = "spectrogram of " + target;
    var links = document.createElement("p");
    ["wav", "flac"].forEach(function (kind) {
      var a = document.createElement("a");
      a.href = base + "." + kind;
      a.download = job.name.replace(/\.[^.]*$/, "") + "-" + target + "." + kind;
      a.textContent = "download " + kind;
      a.className = "download-" + kind;
      links.appendChild(a);
      links.appendChild(document.createTextNode(" "));
    });
    box.append(title, audio, image, links);
    stemsBox.appendChild(box);
  });
}

fileInput.addEventListener("change", function () { if (fileInput.files.length) { upload(fileInput.files[0]); } });
drop.addEventListener("dragover", function (event) { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
drop.addEventListener("drop", function (event) {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) { upload(event.dataTransfer.files[0]); }
});
</script>
</body>
</html>
"""
