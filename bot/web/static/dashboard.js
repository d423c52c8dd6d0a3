// The dashboard's page script: draws the Plotly figures the server rendered into data-figure,
// and, inside Telegram (Mini App), fetches every page with the signed initData in an
// Authorization header — the server checks it on each request — instead of a cookie.
"use strict";

(function () {
  var initData = "";

  function readInitData() {
    var tg = window.Telegram && window.Telegram.WebApp;
    if (tg && tg.initData) return tg.initData;
    var hash = window.location.hash.slice(1);
    var params = new URLSearchParams(hash);
    return params.get("tgWebAppData") || "";
  }

  function drawCharts(root) {
    if (!window.Plotly) return;
    root.querySelectorAll(".chart[data-figure]").forEach(function (el) {
      var fig = JSON.parse(el.getAttribute("data-figure"));
      window.Plotly.newPlot(el, fig.data, fig.layout, { displaylogo: false, responsive: true })
        .then(function () { el.setAttribute("data-drawn", "1"); });
    });
  }

  function swap(html, url) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var main = doc.getElementById("main");
    document.getElementById("main").replaceWith(main);
    document.title = doc.title;
    if (url) window.history.pushState({}, "", url);
    drawCharts(main);
  }

  function request(url, options) {
    options = options || {};
    options.headers = Object.assign({ Authorization: "tma " + initData }, options.headers || {});
    options.credentials = "omit";
    return fetch(url, options).then(function (response) {
      return response.text().then(function (text) {
        if (response.redirected && response.status === 403) return request(response.url);
        return { text: text, url: response.url };
      });
    });
  }

  function load(url, options) {
    return request(url, options).then(function (page) { swap(page.text, page.url); });
  }

  function download(url) {
    request(url).then(function (page) {
      var link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([page.text], { type: "text/csv" }));
      link.download = "members.csv";
      link.click();
    });
  }

  function miniApp() {
    document.addEventListener("click", function (event) {
      var link = event.target.closest("a[href]");
      if (!link || link.origin !== window.location.origin || link.getAttribute("href")[0] === "#") return;
      event.preventDefault();
      if (link.hasAttribute("download")) download(link.href);
      else load(link.href);
    });
    document.addEventListener("submit", function (event) {
      var form = event.target;
      event.preventDefault();
      var data = new FormData(form);
      if (event.submitter && event.submitter.name) data.append(event.submitter.name, event.submitter.value);
      if (form.method.toLowerCase() === "post") {
        load(form.action, { method: "POST", body: new URLSearchParams(data) });
      } else {
        load(form.action + "?" + new URLSearchParams(data).toString());
      }
    });
    window.addEventListener("popstate", function () { load(window.location.href); });
    var shell = document.getElementById("shell");
    if (shell) {
      var target = shell.getAttribute("data-target");
      request(target).then(function (page) {
        swap(page.text, null);
        window.history.replaceState({}, "", target);
      });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    initData = readInitData();
    if (initData) {
      var tg = window.Telegram && window.Telegram.WebApp;
      if (tg) tg.ready();
      miniApp();
    }
    drawCharts(document);
  });
})();
