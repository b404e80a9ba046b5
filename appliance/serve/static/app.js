/* The phone page. ES5 and XMLHttpRequest only (old mobile browsers); every text from the appliance is set with
   textContent, never parsed as HTML. The answer streams as server-sent events read from the response as it grows. */
(function () {
  "use strict";
  var conversationId = null;
  var replica = null; // the laptop that holds conversationId (several may serve one shelter)
  var turns = []; // this conversation's last messages, resent so another laptop can go on with it
  var answers = 0; // answers so far in this conversation (a source's article is asked for by its answer's number)
  var current = null; // the XMLHttpRequest of the question being answered
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function status(text) { $("status").textContent = text; }

  function request(method, url, body, done) {
    var xhr = new XMLHttpRequest();
    xhr.open(method, url, true);
    if (body !== null) { xhr.setRequestHeader("Content-Type", "application/json"); }
    xhr.onreadystatechange = function () {
      if (xhr.readyState !== 4) { return; }
      var data = null;
      try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
      done(xhr.status, data);
    };
    xhr.send(body === null ? null : JSON.stringify(body));
  }
  function errorText(data, fallback) {
    return (data && data.error && data.error.message) ? data.error.message : fallback;
  }

  function start() {
    request("GET", "/api/me", null, function (code, data) {
      if (code === 200 && data) {
        $("join").hidden = true; $("chat").hidden = false;
        status(data.device + " · " + data.model + (data.queue ? " · " + data.queue + " in line" : ""));
      } else if (code === 401) {
        $("join").hidden = false; $("chat").hidden = true; status("not joined");
      } else {
        status("the appliance did not answer (" + code + ")");
      }
    });
  }

  $("login-form").onsubmit = function (event) {
    event.preventDefault();
    request("POST", "/api/login", {key: $("key").value}, function (code, data) {
      if (code === 200) { $("key").value = ""; $("login-error").textContent = ""; start(); }
      else { $("login-error").textContent = errorText(data, "that key did not work"); }
    });
  };

  function sourceLabel(source) {
    var parts = [];
    if (source.title) { parts.push(source.title); }
    if (source.section && source.section !== source.title) { parts.push(source.section); }
    if (source.page !== null && source.page !== undefined) { parts.push("page " + source.page); }
    var file = String(source.path || "").split("/").pop();
    return "[" + source.number + "] " + (parts.length ? parts.join(" › ") : file) + (parts.length && file ? " (" + file + ")" : "");
  }

  function Exchange(question) {
    this.box = el("div", "exchange");
    this.box.appendChild(el("p", "question", question));
    this.queue = el("p", "queue"); this.queue.hidden = true; this.box.appendChild(this.queue);
    this.emergency = el("p", "emergency"); this.emergency.hidden = true; this.box.appendChild(this.emergency);
    this.quotes = el("div", "quotes"); this.box.appendChild(this.quotes);
    this.notice = el("p", "notice"); this.notice.hidden = true; this.box.appendChild(this.notice);
    this.answerLabel = el("p", "label", "The model's words"); this.answerLabel.hidden = true;
    this.box.appendChild(this.answerLabel);
    this.answer = el("div", "answer"); this.box.appendChild(this.answer);
    this.unsupported = el("div", "unsupported"); this.unsupported.hidden = true; this.box.appendChild(this.unsupported);
    this.sourcesLabel = el("p", "label", "Sources"); this.sourcesLabel.hidden = true; this.box.appendChild(this.sourcesLabel);
    this.sources = el("ol", "sources"); this.box.appendChild(this.sources);
    this.error = el("p", "error"); this.error.hidden = true; this.box.appendChild(this.error);
    $("exchanges").appendChild(this.box);
    this.text = "";
    this.questionText = question;
  }
  Exchange.prototype.on = function (kind, data) {
    var i, item;
    if (kind === "queued") {
      this.queue.hidden = data.ahead === 0;
      this.queue.textContent = data.ahead === 1 ? "1 question ahead of you, about " + data.eta_s + " s"
        : data.ahead + " questions ahead of you, about " + data.eta_s + " s";
    } else if (kind === "start") {
      this.queue.hidden = true;
      if (data.emergency) { this.emergency.hidden = false; this.emergency.textContent = data.emergency.text || data.emergency.title || "Emergency: call for help first."; }
      var byNumber = {};
      for (i = 0; data.sources && i < data.sources.length; i++) { byNumber[data.sources[i].number] = data.sources[i]; }
      if (data.quotes && data.quotes.length) {
        this.quotes.appendChild(el("p", "label", "From the library"));
        for (i = 0; i < data.quotes.length; i++) {
          item = el("blockquote", null, data.quotes[i].text);
          var source = byNumber[data.quotes[i].number];
          item.appendChild(el("span", "quote-source", "— " + (source ? sourceLabel(source) : data.quotes[i].source)));
          this.quotes.appendChild(item);
        }
      }
      if (data.notice) { this.notice.hidden = false; this.notice.textContent = data.notice; }
      this.answerLabel.hidden = false;
    } else if (kind === "token") {
      this.text += data; this.answer.textContent = this.text;
    } else if (kind === "done") {
      this.answer.textContent = data.answer || this.text;
      if (data.conversation_id) {
        if (data.conversation_id !== conversationId || data.replica !== replica) { answers = 0; }
        conversationId = data.conversation_id; replica = data.replica || null; answers += 1;
        this.answerNumber = answers;
      }
      turns.push({role: "user", content: this.questionText}, {role: "assistant", content: data.answer || this.text});
      turns = turns.slice(-6);
      var unsupported = [];
      for (i = 0; data.claims && i < data.claims.length; i++) { if (!data.claims[i].supported) { unsupported.push(data.claims[i].sentence); } }
      if (unsupported.length) {
        this.unsupported.hidden = false;
        this.unsupported.appendChild(el("p", "label", "Not found in the library"));
        for (i = 0; i < unsupported.length; i++) { this.unsupported.appendChild(el("p", null, unsupported[i])); }
      }
      if (data.stopped) { this.notice.hidden = false; this.notice.textContent = data.stopped; }
      this.showSources(data.sources || [], data.passages || {});
    } else if (kind === "refused" || kind === "error") {
      this.queue.hidden = true; this.error.hidden = false;
      this.error.textContent = (kind === "refused" ? "Refused: " : "") + (data && data.message ? data.message : "failed");
    } else if (kind === "cancelled") {
      this.notice.hidden = false; this.notice.textContent = "cancelled";
    }
  };
  Exchange.prototype.showSources = function (sources, passages) {
    var i;
    if (!sources.length) { return; }
    this.sourcesLabel.hidden = false;
    for (i = 0; i < sources.length; i++) {
      var li = el("li");
      var button = el("button", "source", sourceLabel(sources[i]) + (sources[i].cited ? "" : " (not cited)"));
      button.type = "button";
      var passage = el("div", "passage", passages[String(sources[i].number)] || sources[i].snippet || "");
      passage.hidden = true;
      button.onclick = (function (p) { return function () { p.hidden = !p.hidden; }; })(passage);
      if (sources[i].article && this.answerNumber) {
        var more = el("button", "source", "Read the whole article");
        more.type = "button";
        more.onclick = articleLoader(conversationId, this.answerNumber, sources[i].number, passage, more);
        passage.appendChild(more);
      }
      li.appendChild(button); li.appendChild(passage);
      this.sources.appendChild(li);
    }
  };

  function articleLoader(conversation, answer, number, box, button) {
    return function () {
      button.disabled = true;
      request("GET", "/api/conversations/" + conversation + "/answers/" + answer + "/sources/" + number + "/article",
        null, function (code, data) {
          button.hidden = true;
          if (code !== 200 || !data) { box.appendChild(el("p", "error", errorText(data, "the article could not be read"))); return; }
          box.textContent = "";
          box.appendChild(el("h2", null, data.title));
          for (var s = 0; s < data.sections.length; s++) {
            var heading = data.sections[s].heading;
            if (heading.length > 1) { box.appendChild(el("h3", null, heading.slice(1).join(" › "))); }
            for (var q = 0; q < data.sections[s].paragraphs.length; q++) { box.appendChild(el("p", null, data.sections[s].paragraphs[q])); }
          }
        });
    };
  }

  function busy(on) {
    $("ask").disabled = on; $("cancel").hidden = !on; $("question").disabled = on;
  }

  $("ask-form").onsubmit = function (event) {
    event.preventDefault();
    var question = $("question").value.replace(/^\s+|\s+$/g, "");
    if (!question || current) { return; }
    var exchange = new Exchange(question);
    var xhr = new XMLHttpRequest();
    var seen = 0, buffer = "";
    current = xhr;
    busy(true);
    function feed() {
      var text = xhr.responseText;
      if (!text || text.length <= seen) { return; }
      buffer += text.substring(seen); seen = text.length;
      var blocks = buffer.replace(/\r\n/g, "\n").split("\n\n");
      buffer = blocks.pop();
      for (var b = 0; b < blocks.length; b++) {
        var lines = blocks[b].split("\n"), kind = "message", data = [];
        for (var l = 0; l < lines.length; l++) {
          if (lines[l].indexOf("event:") === 0) { kind = lines[l].substring(6).replace(/^ /, ""); }
          else if (lines[l].indexOf("data:") === 0) { data.push(lines[l].substring(5).replace(/^ /, "")); }
        }
        if (!data.length) { continue; }
        var value = null;
        try { value = JSON.parse(data.join("\n")); } catch (e) { continue; }
        exchange.on(kind, value);
      }
    }
    xhr.open("POST", "/api/ask", true);
    xhr.setRequestHeader("Content-Type", "application/json");
    xhr.onprogress = feed;
    xhr.onreadystatechange = function () {
      if (xhr.readyState === 3) { feed(); }
      if (xhr.readyState !== 4) { return; }
      feed();
      if (xhr.status !== 200) {
        var data = null;
        try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
        exchange.on("error", {message: errorText(data, xhr.status ? "the appliance answered " + xhr.status : "the connection was lost")});
        if (xhr.status === 401) { start(); }
      }
      current = null; busy(false); $("question").value = ""; $("question").focus();
    };
    xhr.send(JSON.stringify({question: question, conversation_id: conversationId, replica: replica,
                             earlier: turns.length ? turns : null}));
  };
  $("cancel").onclick = function () {
    if (current) { var xhr = current; current = null; xhr.abort(); busy(false); }
  };
  $("new").onclick = function () {
    conversationId = null; replica = null; turns = []; answers = 0; $("exchanges").textContent = ""; $("question").focus();
  };
  start();
})();
