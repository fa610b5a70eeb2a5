"""`aelab explore`: a trained run's latent space, live in the browser.

`server` is the HTTP side (the standard library's ThreadingHTTPServer, a fixed set of page assets, JSON in and
out, every bad request a 4xx with a one-line message); `explorer` is the model side (the codes on a plane, the
decodes of any code, interpolation); `static/` holds the page (HTML, JS, CSS), served by aelab itself, no CDN.
"""
