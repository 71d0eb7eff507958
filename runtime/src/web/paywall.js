(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('pay402-offers').textContent);
  var statusLine = document.getElementById('pay402-status');
  var buttons = Array.prototype.slice.call(document.querySelectorAll('button.pay'));
  // Once a payment went through, no button pays again (a second payment is never offered).
  var paid = false;

  function say(text) { statusLine.textContent = text; }
  function busy(on) { buttons.forEach(function (b) { b.disabled = on; }); }
  function hex(bytes) {
    var out = '';
    for (var i = 0; i < bytes.length; i++) { out += (bytes[i] < 16 ? '0' : '') + bytes[i].toString(16); }
    return out;
  }
  function randomNonce() {
    var b = new Uint8Array(32);
    crypto.getRandomValues(b);
    return '0x' + hex(b);
  }
  function nowSeconds() { return Math.floor(Date.now() / 1000); }
  function utf8(text) { return new TextEncoder().encode(text); }
  function base64(bytes) {
    var s = '';
    for (var i = 0; i < bytes.length; i++) { s += String.fromCharCode(bytes[i]); }
    return btoa(s);
  }
  function base64url(bytes) { return base64(bytes).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''); }
  function decodeBase64Json(text) {
    var t = text.trim().replace(/-/g, '+').replace(/_/g, '/');
    while (t.length % 4) { t += '='; }
    var bin = atob(t);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    return JSON.parse(new TextDecoder().decode(bytes));
  }
  function ascii(json) {
    return json.replace(/[\u007f-\uffff]/g, function (c) { return '\\u' + ('0000' + c.charCodeAt(0).toString(16)).slice(-4); });
  }
  // Sorted keys, compact, ASCII-escaped: the JSON pay402's MPP credentials are written in.
  function canonical(v) {
    if (Array.isArray(v)) { return '[' + v.map(canonical).join(',') + ']'; }
    if (v !== null && typeof v === 'object') {
      return '{' + Object.keys(v).sort().map(function (k) { return ascii(JSON.stringify(k)) + ':' + canonical(v[k]); }).join(',') + '}';
    }
    return ascii(JSON.stringify(v));
  }

  var DOMAIN_TYPE = [
    { name: 'name', type: 'string' }, { name: 'version', type: 'string' },
    { name: 'chainId', type: 'uint256' }, { name: 'verifyingContract', type: 'address' }
  ];
  var TRANSFER_TYPE = [
    { name: 'from', type: 'address' }, { name: 'to', type: 'address' }, { name: 'value', type: 'uint256' },
    { name: 'validAfter', type: 'uint256' }, { name: 'validBefore', type: 'uint256' }, { name: 'nonce', type: 'bytes32' }
  ];

  // Asks the wallet to sign one EIP-3009 TransferWithAuthorization of `value` to `to`.
  function signTransfer(eth, from, domain, to, value, validity) {
    var message = {
      from: from, to: to, value: value,
      validAfter: String(validity[0]), validBefore: String(validity[1]), nonce: randomNonce()
    };
    var typed = {
      types: { EIP712Domain: DOMAIN_TYPE, TransferWithAuthorization: TRANSFER_TYPE },
      primaryType: 'TransferWithAuthorization',
      domain: { name: domain.name, version: domain.version, chainId: domain.chainId, verifyingContract: domain.verifyingContract },
      message: message
    };
    return eth.request({ method: 'eth_signTypedData_v4', params: [from, JSON.stringify(typed)] }).then(function (signature) {
      if (typeof signature !== 'string' || !/^0x[0-9a-fA-F]{130}$/.test(signature)) {
        throw new Error('the wallet returned no signature');
      }
      return { message: message, signature: signature };
    });
  }

  // x402 v2: PAYMENT-SIGNATURE = base64(PaymentPayload), as pay402's x402 client builds it.
  async function x402Headers(eth, from, pay) {
    var req = pay.requirements;
    var t = nowSeconds();
    var signed = await signTransfer(eth, from, pay.domain, req.payTo, req.amount, [Math.max(0, t - 600), t + req.maxTimeoutSeconds]);
    var payload = { x402Version: 2, payload: { signature: signed.signature, authorization: signed.message }, accepted: req };
    if (pay.resource) { payload.resource = pay.resource; }
    if (pay.extensions) {
      var extensions = JSON.parse(JSON.stringify(pay.extensions));
      // A declared payment-identifier gets this payment's id, as pay402's x402 client adds it.
      if (Object.prototype.hasOwnProperty.call(extensions, 'payment-identifier')) {
        var declared = extensions['payment-identifier'];
        if (!declared || typeof declared !== 'object' || Array.isArray(declared)) { declared = {}; }
        if (!declared.info || typeof declared.info !== 'object' || Array.isArray(declared.info)) { declared.info = { required: false }; }
        var id = new Uint8Array(16);
        crypto.getRandomValues(id);
        declared.info.id = 'pay402_' + hex(id);
        extensions['payment-identifier'] = declared;
      }
      payload.extensions = extensions;
    }
    return { 'PAYMENT-SIGNATURE': base64(utf8(JSON.stringify(payload))) };
  }

  // MPP evm charge: Authorization: Payment base64url(credential), as pay402's MppChargeClient
  // builds it: one authorization for the recipient, one per split.
  async function mppHeaders(eth, from, pay) {
    var t = nowSeconds();
    var before = t + 300;
    if (pay.echo.expires) {
      var at = Math.floor(Date.parse(pay.echo.expires) / 1000);
      if (!(at >= t)) { throw new Error('the offer expired: reload the page'); }
      before = Math.max(before, at + 120);
    }
    var validity = [Math.max(0, t - 600), before];
    var signed = [];
    for (var i = 0; i < pay.transfers.length; i++) {
      var s = await signTransfer(eth, from, pay.domain, pay.transfers[i].to, pay.transfers[i].value, validity);
      var a = { type: 'eip-3009' };
      Object.keys(s.message).forEach(function (k) { a[k] = s.message[k]; });
      a.signature = s.signature;
      signed.push(a);
    }
    var authorization = signed[0];
    if (signed.length > 1) { authorization.splits = signed.slice(1); }
    var credential = {
      challenge: pay.echo,
      payload: { type: 'transaction', authorization: authorization },
      source: 'did:pkh:eip155:' + pay.domain.chainId + ':' + from
    };
    return { 'Authorization': 'Payment ' + base64url(utf8(canonical(credential))) };
  }

  async function ensureChain(eth, chainId) {
    var want = '0x' + Number(chainId).toString(16);
    var have;
    try { have = await eth.request({ method: 'eth_chainId' }); } catch (e) { return; }
    if (typeof have === 'string' && have.toLowerCase() === want) { return; }
    try {
      await eth.request({ method: 'wallet_switchEthereumChain', params: [{ chainId: want }] });
    } catch (e) {
      say('Switch your wallet to chain ' + Number(chainId) + ' to pay.');
    }
  }

  function addFact(list, label, value) {
    if (value === undefined || value === null || value === '') { return; }
    var dt = document.createElement('dt');
    dt.textContent = label;
    var dd = document.createElement('dd');
    dd.textContent = String(value);
    list.appendChild(dt);
    list.appendChild(dd);
  }

  async function show(resp) {
    var text = await resp.text();
    var type = resp.headers.get('content-type') || '';
    if (!resp.ok) {
      say('The payment was not accepted (HTTP ' + resp.status + '). Nothing was charged unless a receipt is shown.');
      document.getElementById('pay402-body').textContent = text;
      document.getElementById('pay402-result').hidden = false;
      return;
    }
    var receipt = document.getElementById('pay402-receipt');
    receipt.textContent = '';
    addFact(receipt, 'Status', resp.status);
    addFact(receipt, 'Content type', type);
    var settlement = resp.headers.get('payment-response') || resp.headers.get('x-payment-response');
    if (settlement) {
      try {
        var s = decodeBase64Json(settlement);
        addFact(receipt, 'Settled', s.success ? 'yes' : 'no');
        addFact(receipt, 'Transaction', s.transaction);
        addFact(receipt, 'Network', s.network);
        addFact(receipt, 'Payer', s.payer);
      } catch (e) { addFact(receipt, 'Settlement', settlement); }
    }
    var mppReceipt = resp.headers.get('payment-receipt');
    if (mppReceipt) {
      try {
        var r = decodeBase64Json(mppReceipt);
        addFact(receipt, 'Receipt', r.status);
        addFact(receipt, 'Reference', r.reference);
        addFact(receipt, 'Method', r.method);
        addFact(receipt, 'Time', r.timestamp);
      } catch (e) { addFact(receipt, 'Receipt', mppReceipt); }
    }
    var shown = text;
    if (/json/i.test(type)) {
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { shown = text; }
    }
    // Shown as text, never as markup: a paid HTML resource is not run here.
    document.getElementById('pay402-body').textContent = shown;
    document.getElementById('pay402-result').hidden = false;
    paid = true;
    say('Paid.');
  }

  async function pay(index) {
    var offer = data.offers[index];
    var eth = window.ethereum;
    if (!offer || !offer.pay || paid) { return; }
    if (!eth || typeof eth.request !== 'function') {
      say('No browser wallet found (EIP-1193): install one, or pay with an x402 or MPP client.');
      return;
    }
    busy(true);
    try {
      say('Connecting your wallet…');
      var accounts = await eth.request({ method: 'eth_requestAccounts' });
      var from = accounts && accounts[0];
      if (typeof from !== 'string' || !/^0x[0-9a-fA-F]{40}$/.test(from)) { throw new Error('the wallet shared no account'); }
      await ensureChain(eth, offer.pay.domain.chainId);
      say('Sign in your wallet: ' + offer.summary + '.');
      var headers = offer.protocol === 'mpp' ? await mppHeaders(eth, from, offer.pay) : await x402Headers(eth, from, offer.pay);
      headers['Accept'] = 'application/json, */*;q=0.5';
      say('Sending the payment…');
      var resp = await fetch(window.location.href, { method: data.method, headers: headers, credentials: 'same-origin', cache: 'no-store' });
      await show(resp);
    } catch (e) {
      say('Payment not completed: ' + (e && e.message ? e.message : String(e)) + '.');
    } finally {
      busy(paid);
    }
  }

  buttons.forEach(function (b) {
    b.addEventListener('click', function () { pay(Number(b.getAttribute('data-offer'))); });
    b.disabled = false;
  });
})();
