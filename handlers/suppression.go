package handlers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// CreateSuppression adds an address to the app's suppression list, or to
// the global one (admin scope).
func (h *Handler) CreateSuppression(ctx context.Context, req *oas.SuppressionCreate, params oas.CreateSuppressionParams) (*oas.Suppression, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	listApp, err := suppressionScope(pr, req.Global.Or(false))
	if err != nil {
		return nil, err
	}
	entry, err := suppressionEntry(req, time.Now())
	if err != nil {
		return nil, err
	}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "createSuppression", req, http.StatusCreated,
		func(tx *store.Store) (*oas.Suppression, error) {
			rows, err := tx.SuppressionInsert(ctx, &store.SuppressionInsertParams{AppID: listApp, Entries: []store.SuppressionEntry{entry}})
			if err != nil {
				return nil, err
			}
			if len(rows) == 0 {
				return nil, conflict("already_exists", "%s is already suppressed", entry.Email)
			}
			out := suppressionToAPI(rows[0])
			err = h.audit(ctx, tx, auditEntry{
				action: "suppression.create", resourceType: "suppression", resourceID: out.ID, appID: pr.appID, after: &out,
			})
			if err != nil {
				return nil, err
			}
			return &out, nil
		})
}

// ListSuppressions lists the app's entries and the global ones, newest first.
func (h *Handler) ListSuppressions(ctx context.Context, params oas.ListSuppressionsParams) (*oas.SuppressionList, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	p := &store.SuppressionListParams{AppID: pr.appID, Limit: params.Limit.Or(50)}
	if v, ok := params.Reason.Get(); ok {
		s := string(v)
		p.Reason = &s
	}
	if p.After, err = h.cursorParam(params.Cursor); err != nil {
		return nil, err
	}
	list, more, err := h.store.SuppressionList(ctx, p)
	if err != nil {
		return nil, err
	}
	out := &oas.SuppressionList{HasMore: more}
	out.Data, out.Cursor = page(h, list, more, suppressionToAPI)
	return out, nil
}

// DeleteSuppression removes an address from the app's list, or from the
// global one (admin scope).
func (h *Handler) DeleteSuppression(ctx context.Context, params oas.DeleteSuppressionParams) error {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return err
	}
	listApp, err := suppressionScope(pr, params.Global.Or(false))
	if err != nil {
		return err
	}
	return h.store.Tx(ctx, func(tx *store.Store) error {
		s, err := tx.SuppressionDelete(ctx, listApp, params.Email)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("suppression entry")
		}
		if err != nil {
			return err
		}
		before := suppressionToAPI(s)
		return h.audit(ctx, tx, auditEntry{
			action: "suppression.delete", resourceType: "suppression", resourceID: s.ID, appID: pr.appID, before: &before,
		})
	})
}

// ExportSuppressions streams every entry visible to the app as NDJSON,
// straight from the database cursor, so the list's size does not matter.
func (h *Handler) ExportSuppressions(ctx context.Context) (oas.ExportSuppressionsOK, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return oas.ExportSuppressionsOK{}, err
	}
	pr2, pw := io.Pipe()
	// The response writer stops reading when the client goes away; closing
	// the reader then unblocks the writer below. The request's context ends
	// once the handler has returned.
	stop := context.AfterFunc(ctx, func() { _ = pr2.CloseWithError(ctx.Err()) })
	go func() {
		defer stop()
		bw := bufio.NewWriterSize(pw, 32<<10)
		err := h.store.SuppressionExport(ctx, pr.appID, func(s *store.Suppression) error {
			out := suppressionToAPI(s)
			b, err := out.MarshalJSON()
			if err != nil {
				return err
			}
			_, _ = bw.Write(b)
			return bw.WriteByte('\n')
		})
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			h.logger.WarnContext(ctx, "suppression export ended early", "app_id", pr.appID, "error", err)
		}
		_ = pw.CloseWithError(err)
	}()
	return oas.ExportSuppressionsOK{Data: pr2}, nil
}

// importBatch is how many entries one insert statement carries.
const importBatch = 1000

// ImportSuppressions bulk-adds app-scoped entries from CSV or NDJSON. Bad
// lines are reported and skipped; the rest are added in one transaction.
func (h *Handler) ImportSuppressions(ctx context.Context, req oas.ImportSuppressionsReq, params oas.ImportSuppressionsParams) (*oas.SuppressionImportResult, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	var body io.Reader
	var kind string
	switch r := req.(type) {
	case *oas.ImportSuppressionsReqTextCsv:
		body, kind = r.Data, "csv"
	case *oas.ImportSuppressionsReqApplicationXNdjson:
		body, kind = r.Data, "ndjson"
	default:
		return nil, newAPIError(http.StatusUnsupportedMediaType, "unsupported_media_type", "send text/csv or application/x-ndjson")
	}
	// The transport has already capped the body at MQ_MAX_BODY_BYTES.
	raw, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	var entries []store.SuppressionEntry
	var lines []int
	var bad []oas.SuppressionImportError
	now := time.Now()
	add := func(line int, e store.SuppressionEntry) { entries, lines = append(entries, e), append(lines, line) }
	fail := func(line int, format string, args ...any) {
		bad = append(bad, oas.SuppressionImportError{Line: line, Message: fmt.Sprintf(format, args...)})
	}
	if kind == "csv" {
		err = parseSuppressionCSV(raw, now, add, fail)
	} else {
		parseSuppressionNDJSON(raw, now, add, fail)
	}
	if err != nil {
		return nil, err
	}
	// One entry per address: a repeat later in the upload is a skip.
	seen := make(map[string]bool, len(entries))
	unique := entries[:0]
	for _, e := range entries {
		k := store.NormalizeAddress(e.Email)
		if !seen[k] {
			seen[k] = true
			unique = append(unique, e)
		}
	}
	appID := pr.appID
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "importSuppressions", uploadBody{kind: kind, body: raw}, http.StatusOK,
		func(tx *store.Store) (*oas.SuppressionImportResult, error) {
			imported := 0
			for i := 0; i < len(unique); i += importBatch {
				rows, err := tx.SuppressionInsert(ctx, &store.SuppressionInsertParams{
					AppID: &appID, Entries: unique[i:min(i+importBatch, len(unique))],
				})
				if err != nil {
					return nil, err
				}
				imported += len(rows)
			}
			out := &oas.SuppressionImportResult{Imported: imported, Skipped: len(entries) - imported, Errors: bad}
			if out.Errors == nil {
				out.Errors = []oas.SuppressionImportError{}
			}
			err := h.audit(ctx, tx, auditEntry{
				action: "suppression.import", resourceType: "suppression", appID: pr.appID,
				after: map[string]any{"format": kind, "imported": out.Imported, "skipped": out.Skipped, "errors": len(out.Errors)},
			})
			if err != nil {
				return nil, err
			}
			return out, nil
		})
}

// parseSuppressionCSV reads a CSV upload: a header row naming an email
// column and optionally reason and expires_at, in any order.
func parseSuppressionCSV(raw []byte, now time.Time, add func(int, store.SuppressionEntry), fail func(int, string, ...any)) error {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf"))))
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if err != nil {
		return invalid("body", "the CSV header row could not be read: it must name an email column")
	}
	col := map[string]int{}
	for i, name := range header {
		col[strings.ToLower(strings.TrimSpace(name))] = i
	}
	emailCol, ok := col["email"]
	if !ok {
		return invalid("body", "the CSV header row has no email column")
	}
	field := func(rec []string, name string) string {
		if i, ok := col[name]; ok && i < len(rec) {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			fail(pe.StartLine, "%v", pe.Err)
			continue
		}
		if err != nil {
			return err
		}
		line, _ := r.FieldPos(0)
		if emailCol >= len(rec) {
			fail(line, "no email")
			continue
		}
		req := &oas.SuppressionCreate{Email: strings.TrimSpace(rec[emailCol])}
		if v := field(rec, "reason"); v != "" {
			var reason oas.SuppressionReason
			if err := reason.UnmarshalText([]byte(v)); err != nil {
				fail(line, "reason %q is not one of hard_bounce, soft_bounce, complaint, unsubscribe, manual", v)
				continue
			}
			req.Reason = oas.NewOptSuppressionReason(reason)
		}
		if v := field(rec, "expires_at"); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				fail(line, "expires_at %q is not an RFC 3339 time", v)
				continue
			}
			req.ExpiresAt = oas.NewOptDateTime(t)
		}
		e, err := suppressionEntry(req, now)
		if err != nil {
			fail(line, "%v", err)
			continue
		}
		add(line, e)
	}
}

// parseSuppressionNDJSON reads one SuppressionCreate object per line.
func parseSuppressionNDJSON(raw []byte, now time.Time, add func(int, store.SuppressionEntry), fail func(int, string, ...any)) {
	for i, l := range bytes.Split(raw, []byte("\n")) {
		line := i + 1
		l = bytes.TrimSpace(l)
		if len(l) == 0 {
			continue
		}
		var req oas.SuppressionCreate
		if err := req.UnmarshalJSON(l); err != nil {
			fail(line, "not a suppression object: %v", err)
			continue
		}
		e, err := suppressionEntry(&req, now)
		if err != nil {
			fail(line, "%v", err)
			continue
		}
		add(line, e)
	}
}

// uploadBody fingerprints a non-JSON upload for idempotency.
type uploadBody struct {
	kind string
	body []byte
}

func (u uploadBody) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"kind": u.kind, "body": string(u.body)})
}

// suppressionScope returns the list a request acts on: the app's, or the
// global one (nil), which needs the admin scope.
func suppressionScope(pr *principal, global bool) (*uuid.UUID, error) {
	if !global {
		id := pr.appID
		return &id, nil
	}
	if !hasScope(pr.scopes, "admin") {
		return nil, forbidden("insufficient_scope", "the global suppression list needs an API key with the admin scope")
	}
	return nil, nil
}

// suppressionEntry validates one entry to add.
func suppressionEntry(req *oas.SuppressionCreate, now time.Time) (store.SuppressionEntry, error) {
	email := strings.TrimSpace(req.Email)
	if err := validateAddress("suppression", oas.Address{Email: email}); err != nil {
		return store.SuppressionEntry{}, invalid("email", "%q is not a valid email address", req.Email)
	}
	e := store.SuppressionEntry{Email: email, Reason: string(req.Reason.Or(oas.SuppressionReasonManual))}
	if v, ok := req.ExpiresAt.Get(); ok {
		if !v.After(now) {
			return store.SuppressionEntry{}, invalid("expires_at", "expires_at must be in the future")
		}
		v = v.UTC()
		e.ExpiresAt = &v
	}
	return e, nil
}

func suppressionToAPI(s *store.Suppression) oas.Suppression {
	out := oas.Suppression{
		ID: s.ID, Email: s.Email, Reason: oas.SuppressionReason(s.Reason), Scope: oas.SuppressionScopeApp,
		CreatedAt: s.CreatedAt,
	}
	if s.AppID == nil {
		out.Scope = oas.SuppressionScopeGlobal
	}
	if s.SourceEmailID != nil {
		out.SourceEmailID = oas.NewOptUUID(*s.SourceEmailID)
	}
	if s.ExpiresAt != nil {
		out.ExpiresAt = oas.NewOptDateTime(*s.ExpiresAt)
	}
	return out
}

// withSuppressed reports, in request order, which recipients of an
// accepted email were queued and which were dropped as suppressed.
func withSuppressed(out *oas.EmailAccepted, p *store.EmailInsertParams, e *store.Email) *oas.EmailAccepted {
	if len(e.Suppressed) == 0 {
		return out
	}
	out.Recipients = recipientResults(p, e)
	return out
}

func recipientResults(p *store.EmailInsertParams, e *store.Email) []oas.RecipientResult {
	var req []store.Address
	for _, l := range [][]store.Address{p.To, p.Cc, p.Bcc} {
		req = append(req, l...)
	}
	dropped := make(map[string]bool, len(e.Suppressed))
	for _, s := range e.Suppressed {
		dropped[store.NormalizeAddress(s.Email)] = true
	}
	out := make([]oas.RecipientResult, 0, len(req))
	for _, a := range req {
		r := oas.RecipientResultResultQueued
		if dropped[store.NormalizeAddress(a.Email)] {
			r = oas.RecipientResultResultSuppressed
		}
		out = append(out, oas.RecipientResult{Email: a.Email, Result: r})
	}
	return out
}
