package handlers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ogen-go/ogen/middleware"
)

// requestInfo is what the transport knows of a request, for errors, logs,
// the IP allowlist and (later) the audit log.
type requestInfo struct {
	ID        string
	IP        net.IP
	UserAgent string
}

type requestInfoKey struct{}

func requestInfoFrom(ctx context.Context) *requestInfo {
	if ri, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{}
}

// A client's own X-Request-Id is kept when it looks like an id, so logs can
// be joined across systems; anything else is replaced.
var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{8,64}$`)

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusRecorder remembers the status code for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// transport are the HTTP-level settings of withRequest.
type transport struct {
	maxBody        int64
	maxBatchBody   int64
	trustedProxies []netip.Prefix
	logger         *slog.Logger
	// writeErr writes an error in the API's shape before routing.
	writeErr func(ctx context.Context, w http.ResponseWriter, err error)
}

// clientIP is the request's peer address, or, when the peer is a trusted
// proxy, the right-most X-Forwarded-For address that is not itself a
// trusted proxy (the left-most entries are whatever the client claimed).
func (t *transport) clientIP(r *http.Request) net.IP {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return nil
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	peer = peer.Unmap()
	if !t.trusted(peer) {
		return net.IP(peer.AsSlice())
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // a malformed hop: stop believing the chain
		}
		a = a.Unmap()
		if !t.trusted(a) {
			return net.IP(a.AsSlice())
		}
		peer = a
	}
	return net.IP(peer.AsSlice())
}

func (t *transport) trusted(a netip.Addr) bool {
	for _, p := range t.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// withRequest gives every request an id (echoed in X-Request-Id, every
// error body and every log line made with the request's context), finds
// the client's address, caps the body, and logs the request when it ends.
func withRequest(next http.Handler, t *transport) http.Handler {
	logger := t.logger
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !requestIDPattern.MatchString(id) {
			id = newRequestID()
		}
		ri := &requestInfo{ID: id, UserAgent: r.UserAgent(), IP: t.clientIP(r)}
		w.Header().Set("X-Request-Id", id)
		if !storableURL(r) {
			ctx := context.WithValue(r.Context(), requestInfoKey{}, ri)
			rec := &statusRecorder{ResponseWriter: w}
			t.writeErr(ctx, rec, errUnstorable("the URL"))
			return
		}
		if r.Body != nil {
			limit := t.maxBody
			if r.URL.Path == "/v1/emails/batch" {
				limit = t.maxBatchBody
			}
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, ri)))
		level := slog.LevelInfo
		if rec.status >= 500 {
			level = slog.LevelError
		}
		logger.LogAttrs(r.Context(), level, "request",
			slog.String("request_id", id), slog.String("method", r.Method),
			slog.String("path", r.URL.Path), slog.Int("status", rec.status),
			slog.Duration("duration", time.Since(start)))
	})
}

// requestLogHandler adds the request id to every record logged with a
// request's context, so one id finds all the lines of one request.
type requestLogHandler struct{ slog.Handler }

func (h requestLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if ri, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		r.AddAttrs(slog.String("request_id", ri.ID))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestLogHandler{h.Handler.WithAttrs(attrs)}
}

func (h requestLogHandler) WithGroup(name string) slog.Handler {
	return requestLogHandler{h.Handler.WithGroup(name)}
}

// storableText reports whether s can be stored in PostgreSQL text: valid
// UTF-8 without NUL characters. Anything else would fail deep in the
// database as a server error, so it is refused at the door instead.
func storableText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// storableURL checks the decoded path and every decoded query value:
// percent-encoding can carry any byte (%00, %FF) past a check of the raw URL.
func storableURL(r *http.Request) bool {
	if !storableText(r.URL.Path) {
		return false
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return true // ogen reports malformed queries itself, as 400
	}
	for k, vs := range q {
		if !storableText(k) {
			return false
		}
		for _, v := range vs {
			if !storableText(v) {
				return false
			}
		}
	}
	return true
}

func errUnstorable(where string) *apiError {
	return newAPIError(http.StatusBadRequest, "invalid_request",
		"%s contains invalid UTF-8 or a NUL character, which Mail Queue does not accept", where)
}

// rejectUnstorableBodies is an ogen middleware refusing JSON bodies that
// hold invalid UTF-8 or an escaped NUL (\u0000), for the same reason as
// storableText: PostgreSQL text cannot hold them.
func rejectUnstorableBodies(req middleware.Request, next middleware.Next) (middleware.Response, error) {
	if len(req.RawBody) > 0 && (!utf8.Valid(req.RawBody) || bytes.Contains(req.RawBody, []byte(`\u0000`))) {
		return middleware.Response{}, errUnstorable("the request body")
	}
	return next(req)
}
