// The upload page: send each image to /predict and show its top-3 (the server's default:
// every class of a model with fewer) as a card; its "explain" toggle asks /explain for the
// top class's heatmap and lays it over the photo where the model's crop lies.
"use strict";

const TEXT = {
  en: { drop: "Drop images here, paste, or choose files",
        working: "Classifying…", latency: "server time", tooLarge: "File is larger than the limit",
        busy: "The service is busy; retry in a moment.", network: "Could not reach the service.",
        noLabels: "", sent: "sent", original: "original", sendOriginal: "Send the original",
        explain: "Explain", heatmapOf: "Heatmap of" },
  zh: { drop: "拖放图片到这里、粘贴，或选择文件",
        working: "识别中…", latency: "服务器耗时", tooLarge: "文件超过大小限制",
        busy: "服务繁忙，请稍后重试。", network: "无法连接到服务。",
        noLabels: "此模型没有中文标签，结果以英文显示。",
        sent: "已发送", original: "原图", sendOriginal: "发送原图",
        explain: "解释", heatmapOf: "热力图" },
};
const maxBytes = Number(document.body.dataset.maxBytes);
const model = encodeURIComponent(document.body.dataset.model);  // the one this page describes
const labelLanguages = document.body.dataset.languages.split(",");  // the model's own
const labelsNote = document.getElementById("labels-note");
// The server resizes the short side to the model's input and keeps at most twice that when
// it decodes a large photo (WANWU_DECODE=fast): more pixels only cost upload time.
const sendShortSide = Number(document.body.dataset.sendShortSide);
const cards = document.getElementById("cards");
const uploads = [];  // {file, card}: kept so a language switch can re-ask the server
let lang = localStorage.getItem("wanwu.lang") === "zh" ? "zh" : "en";

function t(key) { return TEXT[lang][key]; }

// The page speaks `lang`; labels come in it when the model has them, else in English.
function labelLanguage() { return labelLanguages.includes(lang) ? lang : labelLanguages[0]; }

function setLanguage(next) {
  lang = next;
  localStorage.setItem("wanwu.lang", lang);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  // With several models served, choosing one loads its page (its labels, banner and limits).
const picker = document.getElementById("model-pick");
if (picker) picker.addEventListener("change", () => picker.form.submit());
for (const button of document.querySelectorAll(".lang button")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === lang));
  }
  document.querySelector('[data-i18n="drop"]').textContent = t("drop");
  labelsNote.hidden = labelLanguage() === lang;
  labelsNote.textContent = labelsNote.hidden ? "" : t("noLabels");
  uploads.forEach(classify);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function size(bytes) {
  return bytes < 2 ** 20 ? `${(bytes / 1024).toFixed(0)} KB` : `${(bytes / 2 ** 20).toFixed(1)} MB`;
}

// A JPEG of the picture with its short side at sendShortSide, or null to send the file as it
// is: already small enough, or a format this browser cannot decode (HEIC outside Safari),
// which the server decodes. The upright size of what is sent goes to upload.sentSize: an
// explanation's crop box is in its pixels.
async function downsized(upload) {
  let picture;
  try {
    picture = await createImageBitmap(upload.file);  // upright: EXIF orientation is applied
  } catch (error) {
    return null;
  }
  const scale = sendShortSide / Math.min(picture.width, picture.height);
  upload.fullSize = upload.sentSize = { width: picture.width, height: picture.height };
  if (scale >= 1) { picture.close(); return null; }
  const width = Math.round(picture.width * scale), height = Math.round(picture.height * scale);
  upload.sentSize = { width, height };
  const small = await createImageBitmap(picture, { resizeWidth: width, resizeHeight: height,
                                                   resizeQuality: "high" });
  picture.close();
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").drawImage(small, 0, 0);
  small.close();
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
}

function sentNote(upload) {
  const note = el("p", "sent");
  if (!upload.small) {
    note.textContent = `${t("sent")}: ${size(upload.file.size)}`;
    return note;
  }
  note.textContent = `${t("sent")}: ${size(upload.small.size)} · ${t("original")}: ${size(upload.file.size)} `;
  const button = el("button", "original", t("sendOriginal"));
  button.type = "button";
  button.addEventListener("click", () => {
    upload.small = null; upload.original = true; upload.sentSize = upload.fullSize; classify(upload);
  });
  note.append(button);
  return note;
}

function showPredictions(upload, body) {
  const list = el("ol");
  for (const p of body.predictions) {
    const percent = (p.score * 100).toFixed(1) + "%";
    const item = el("li");
    const row = el("div", "row");
    row.append(el("span", "label", p.label), el("span", "score", percent));
    const bar = el("div", "bar");
    const fill = el("span");
    fill.style.width = percent;
    bar.append(fill);
    bar.setAttribute("aria-hidden", "true");
    item.append(row, bar);
    list.append(item);
  }
  upload.card.note = el("p", "explained");
  upload.card.result.replaceChildren(list,
    el("p", "meta", `${t("latency")}: ${body.timing_ms.total.toFixed(0)} ms`), sentNote(upload),
    explainToggle(upload), upload.card.note);
  if (upload.explaining) explain(upload);  // a new answer (another language): a new caption
}

function explainToggle(upload) {
  const button = el("button", "explain", t("explain"));
  button.type = "button";
  button.setAttribute("aria-pressed", String(Boolean(upload.explaining)));
  button.addEventListener("click", () => {
    upload.explaining = !upload.explaining;
    button.setAttribute("aria-pressed", String(upload.explaining));
    if (upload.explaining) explain(upload); else hideHeatmap(upload.card);
  });
  return button;
}

async function explain(upload) {
  const { card } = upload;
  const form = new FormData();
  form.append("file", upload.small || upload.file, upload.file.name);
  try {
    const response = await fetch(`/explain?model=${model}&lang=${labelLanguage()}`, { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!upload.explaining) return;  // toggled off while it ran
    if (response.ok) return showHeatmap(upload, body.explanations[0]);
    card.note.textContent = body.error ? body.error.message : `HTTP ${response.status}`;
  } catch (error) {
    card.note.textContent = t("network");
  }
}

// The overlay (the heatmap over the model's crop) sits on the photo at the crop's box, given
// in the sent picture's pixels, so as percentages of the photo shown it fits at any size.
function showHeatmap(upload, explanation) {
  const { card } = upload;
  const size = upload.sentSize || { width: card.preview.naturalWidth, height: card.preview.naturalHeight };
  const [left, top, right, bottom] = explanation.box;
  const heat = el("img", "heat");
  heat.alt = `${t("heatmapOf")} ${explanation.label}`;
  heat.src = explanation.overlay;
  heat.style.left = `${(100 * left) / size.width}%`;
  heat.style.top = `${(100 * top) / size.height}%`;
  heat.style.width = `${(100 * (right - left)) / size.width}%`;
  heat.style.height = `${(100 * (bottom - top)) / size.height}%`;
  hideHeatmap(card);
  card.frame.append(heat);
  card.frame.classList.add("explaining");
  card.note.textContent = `${t("heatmapOf")}: ${explanation.label} (${(explanation.score * 100).toFixed(1)}%)`;
}

function hideHeatmap(card) {
  for (const heat of card.frame.querySelectorAll(".heat")) heat.remove();
  card.frame.classList.remove("explaining");
  card.note.textContent = "";
}

function showError(card, message) {
  card.result.replaceChildren(el("p", "error", message));
  card.result.querySelector(".error").setAttribute("role", "alert");
}

async function classify(upload) {
  const { file, card } = upload;
  card.result.replaceChildren(el("p", "meta", t("working")));
  if (upload.small === undefined) upload.small = upload.original ? null : await downsized(upload);
  const sending = upload.small || file;
  if (sending.size > maxBytes) return showError(card, `${t("tooLarge")} (${(maxBytes / 2 ** 20).toFixed(0)} MB).`);
  const form = new FormData();
  form.append("file", sending, file.name);
  try {
    const response = await fetch(`/predict?model=${model}&lang=${labelLanguage()}`, { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (response.ok) return showPredictions(upload, body);
    const message = body.error ? body.error.message : `HTTP ${response.status}`;
    showError(card, response.status === 503 ? `${t("busy")} (${message})` : message);
  } catch (error) {
    showError(card, t("network"));
  }
}

function addFiles(files) {
  for (const file of files) {
    const item = el("li", "card");
    const preview = el("img");
    preview.alt = file.name;
    if (file.type.startsWith("image/")) preview.src = URL.createObjectURL(file);
    const frame = el("div", "frame");
    frame.append(preview);
    const body = el("div", "body");
    const result = el("div", "result");
    body.append(el("div", "name", file.name), result);
    item.append(frame, body);
    cards.prepend(item);
    const upload = { file, card: { result, frame, preview } };
    uploads.push(upload);
    classify(upload);
  }
}

const drop = document.getElementById("drop");
const input = document.getElementById("file");
input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addFiles(e.dataTransfer.files); });
document.addEventListener("paste", (e) => {
  const files = [...e.clipboardData.items].filter((i) => i.kind === "file").map((i) => i.getAsFile());
  if (files.length) addFiles(files);
});
// With several models served, choosing one loads its page (its labels, banner and limits).
const picker = document.getElementById("model-pick");
if (picker) picker.addEventListener("change", () => picker.form.submit());
for (const button of document.querySelectorAll(".lang button")) {
  button.addEventListener("click", () => setLanguage(button.dataset.lang));
}
setLanguage(lang);
