package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-faster/jx"
	ht "github.com/ogen-go/ogen/http"
	"github.com/ogen-go/ogen/ogenerrors"
	"github.com/ogen-go/ogen/validate"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// apiError is an error a client can act on: it carries its HTTP status, a
// stable machine-readable code and, for bad input, the offending field.
// Every error the API returns is mapped to one in toAPIError, the single
// place where errors become HTTP.
type apiError struct {
	status     int
	code       string
	message    string
	field      string
	retryAfter int
}

func (e *apiError) Error() string { return e.message }

func newAPIError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// invalid reports semantically invalid input in field (422).
func invalid(field, format string, args ...any) *apiError {
	e := newAPIError(http.StatusUnprocessableEntity, "validation_failed", format, args...)
	e.field = field
	return e
}

func notFound(what string) *apiError {
	return newAPIError(http.StatusNotFound, "not_found", "%s not found", what)
}

func unauthorized(format string, args ...any) *apiError {
	return newAPIError(http.StatusUnauthorized, "unauthorized", format, args...)
}

func forbidden(code, format string, args ...any) *apiError {
	return newAPIError(http.StatusForbidden, code, format, args...)
}

func conflict(code, format string, args ...any) *apiError {
	return newAPIError(http.StatusConflict, code, format, args...)
}

// NewError turns any error from a handler or the security layer into the
// API's one error shape.
func (h *Handler) NewError(ctx context.Context, err error) *oas.ErrorStatusCodeWithHeaders {
	e := h.toAPIError(ctx, err)
	out := &oas.ErrorStatusCodeWithHeaders{
		StatusCode: e.status,
		Response: oas.Error{Error: oas.ErrorDetail{
			Code: e.code, Message: e.message, RequestID: requestInfoFrom(ctx).ID,
		}},
	}
	if e.field != "" {
		out.Response.Error.Field = oas.NewOptString(e.field)
	}
	if e.retryAfter > 0 {
		out.RetryAfter = oas.NewOptInt(e.retryAfter)
	}
	return out
}

func (h *Handler) toAPIError(ctx context.Context, err error) *apiError {
	var (
		ae       *apiError
		maxBytes *http.MaxBytesError
		vErr     *validate.Error
		decReq   *ogenerrors.DecodeRequestError
		decPar   *ogenerrors.DecodeParamsError
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &maxBytes):
		return newAPIError(http.StatusRequestEntityTooLarge, "payload_too_large",
			"request body exceeds %d bytes", maxBytes.Limit)
	case errors.Is(err, ogenerrors.ErrSecurityRequirementIsNotSatisfied):
		return unauthorized("missing or malformed Authorization header: send 'Authorization: Bearer <key>'")
	case errors.As(err, &vErr) && len(vErr.Fields) > 0:
		f := vErr.Fields[0]
		e := newAPIError(http.StatusBadRequest, "validation_failed", "%s: %v", f.Name, f.Error)
		e.field = f.Name
		return e
	case errors.As(err, &decReq):
		if errors.Is(err, validate.ErrBodyRequired) {
			return newAPIError(http.StatusBadRequest, "invalid_request", "request body is required")
		}
		var ct *validate.InvalidContentTypeError
		if errors.As(err, &ct) {
			return newAPIError(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type %q is not accepted here", ct.ContentType)
		}
		e := newAPIError(http.StatusBadRequest, "invalid_request", "request body is not valid: %s", decodeMessage(decReq.Err))
		e.field = jsonField(decReq.Err)
		return e
	case errors.As(err, &decPar):
		e := newAPIError(http.StatusBadRequest, "invalid_request", "invalid parameter: %s", decodeMessage(decPar.Err))
		var pe *ogenerrors.DecodeParamError
		if errors.As(err, &pe) {
			e.field = pe.Name
		}
		return e
	case errors.Is(err, ht.ErrNotImplemented):
		return newAPIError(http.StatusNotImplemented, "not_implemented", "this endpoint is planned but not built yet")
	case errors.Is(err, store.ErrNotFound):
		return notFound("resource")
	case errors.Is(err, store.ErrQueueChanged):
		// The queue was deleted (or changed) while the request ran: nothing
		// was stored.
		return newAPIError(http.StatusConflict, "queue_changed",
			"the queue was changed or deleted while this request ran; nothing was stored, send it again")
	case errors.Is(err, context.Canceled):
		return newAPIError(499, "client_closed_request", "request cancelled by the client")
	}
	// Anything else is ours, including a failure inside an authenticator
	// (the key lookup could not reach PostgreSQL): a 500, never a 401 that
	// would tell a valid key it is wrong.
	h.logger.ErrorContext(ctx, "internal error", "error", err, "request_id", requestInfoFrom(ctx).ID)
	return newAPIError(http.StatusInternalServerError, "internal_error",
		"internal error; quote request id %s when reporting it", requestInfoFrom(ctx).ID)
}

// decodeMessage shortens ogen's nested decode errors to their last part,
// which is the one that names the problem.
func decodeMessage(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && i+2 < len(msg) {
		tail := msg[i+2:]
		if strings.Contains(msg, "decode ") {
			return strings.TrimPrefix(msg[strings.Index(msg, "decode "):], "decode ")
		}
		return tail
	}
	return msg
}

// jsonField finds the JSON field a decode error is about, if ogen says.
func jsonField(err error) string {
	msg := err.Error()
	const marker = "decode field "
	if i := strings.Index(msg, marker); i >= 0 {
		rest := msg[i+len(marker):]
		if j := strings.IndexAny(rest, ": "); j > 0 {
			return strings.Trim(rest[:j], `"`)
		}
	}
	return ""
}

// errorHandler writes errors raised before a handler runs (bad parameters,
// undecodable bodies) in the same shape as every other error.
func (h *Handler) errorHandler(ctx context.Context, w http.ResponseWriter, r *http.Request, err error) {
	h.writeError(ctx, w, h.NewError(ctx, err))
}

func (h *Handler) writeError(_ context.Context, w http.ResponseWriter, e *oas.ErrorStatusCodeWithHeaders) {
	var enc jx.Encoder
	e.Response.Encode(&enc)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if v, ok := e.RetryAfter.Get(); ok {
		w.Header().Set("Retry-After", strconv.Itoa(v))
	}
	w.WriteHeader(e.StatusCode)
	_, _ = w.Write(enc.Bytes())
}

func (h *Handler) routeNotFound(w http.ResponseWriter, r *http.Request) {
	h.writeError(r.Context(), w, h.NewError(r.Context(), newAPIError(http.StatusNotFound, "route_not_found", "no such endpoint: %s %s", r.Method, r.URL.Path)))
}

func (h *Handler) methodNotAllowed(w http.ResponseWriter, r *http.Request, allowed string) {
	w.Header().Set("Allow", allowed)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h.writeError(r.Context(), w, h.NewError(r.Context(), newAPIError(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed here; allowed: %s", r.Method, allowed)))
}
