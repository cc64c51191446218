// Starts Swagger UI. It lives in a file of its own so that the page's Content-Security-Policy
// can forbid inline scripts altogether.
//
// A large site has hundreds of entities: the page loads one entity's document at a time
// (/openapi/{Entity}.json, listed by /openapi/index.json), with a selector to switch. The
// documents a reader gets depend on its client token: once given with "Authorize", the token
// is kept for this tab only (sessionStorage) and sent with every document request.
(function () {
  "use strict";
  var holder = document.getElementById("swagger-ui");
  var KEY = "civicrm-gateway-token";
  var token = window.sessionStorage.getItem(KEY) || "";

  function withToken(request) {
    if (token && !request.headers.Authorization) {
      request.headers.Authorization = "Bearer " + token;
    }
    return request;
  }

  // Authorize / Logout change which documents this reader may see: start again with them.
  function keepToken() {
    return {statePlugins: {auth: {wrapActions: {
      authorize: function (original) {
        return function (payload) {
          var result = original(payload);
          var given = payload && payload.clientToken && payload.clientToken.value;
          if (given && given !== token) {
            window.sessionStorage.setItem(KEY, given);
            window.location.reload();
          }
          return result;
        };
      },
      logout: function (original) {
        return function (names) {
          var result = original(names);
          if (token) {
            window.sessionStorage.removeItem(KEY);
            window.location.reload();
          }
          return result;
        };
      }
    }}}};
  }

  function selector(index, primary) {
    var bar = document.createElement("div");
    bar.className = "cgw-documents";
    bar.style.cssText = "max-width:1460px;margin:12px auto 0;padding:0 20px;font-family:sans-serif";
    var label = document.createElement("label");
    label.textContent = "Document: ";
    var select = document.createElement("select");
    select.id = "cgw-document";
    var options = index.entities.map(function (e) { return [e.url, e.name]; });
    options.push([index.generic, "Gateway routes (generic, batch, service)"]);
    options.push([index.all, "Everything in one document (slow on a large site)"]);
    options.forEach(function (pair) {
      var option = document.createElement("option");
      option.value = pair[0];
      option.textContent = pair[1];
      option.selected = pair[0] === primary;
      select.appendChild(option);
    });
    select.addEventListener("change", function () {
      window.ui.specActions.updateUrl(select.value);
      window.ui.specActions.download(select.value);
    });
    label.appendChild(select);
    bar.appendChild(label);
    holder.parentNode.insertBefore(bar, holder);
  }

  function start(index) {
    var url = holder.getAttribute("data-openapi");
    if (index) {
      var first = index.entities.filter(function (e) { return e.name === "Contact"; })[0] ||
        index.entities[0];
      url = first ? first.url : index.generic;
      selector(index, url);
    }
    window.ui = SwaggerUIBundle({
      url: url,
      dom_id: "#swagger-ui",
      deepLinking: true,
      docExpansion: "list",
      filter: true,
      displayOperationId: true,
      showExtensions: true,
      showCommonExtensions: true,
      validatorUrl: null,
      requestInterceptor: withToken,
      plugins: [keepToken],
      onComplete: function () {
        if (token) {
          window.ui.preauthorizeApiKey("clientToken", token);
        }
      }
    });
  }

  var headers = token ? {Authorization: "Bearer " + token} : {};
  fetch(holder.getAttribute("data-index"), {headers: headers})
    .then(function (response) { return response.ok ? response.json() : null; })
    .catch(function () { return null; })
    .then(start);
})();
