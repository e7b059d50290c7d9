package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/go-faster/jx"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// CreateEmailBatch accepts up to 10,000 emails sharing sender, subject and
// bodies. Shared fields are validated first (any error there is a 422 for
// the whole batch); then each entry on its own, and a bad entry is reported
// in rejected by its index while the others are accepted. The subject and
// bodies are parsed once and rendered per entry with the shared
// personalizations overlaid by the entry's. All accepted emails, their
// events and their send jobs commit in one transaction, with the quota
// taken for them in the same one.
//
// Missing personalization variables render empty (the response has no
// room for per-entry warnings); on a strict queue the entry is rejected.
func (h *Handler) CreateEmailBatch(ctx context.Context, req *oas.EmailBatchRequest, params oas.CreateEmailBatchParams) (*oas.EmailBatchAccepted, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if err := validateEmailRequest(batchShared(req), time.Now()); err != nil {
		return nil, err
	}
	queueName := req.Queue.Or(store.DefaultQueueName)
	q, err := h.store.QueueGetByName(ctx, pr.appID, queueName)
	if errors.Is(err, store.ErrNotFound) {
		return nil, invalid("queue", "queue %q does not exist; create it with POST /v1/queues", queueName)
	}
	if err != nil {
		return nil, err
	}
	if q.IsDraining {
		return nil, conflict("queue_draining", "queue %q is draining and accepts no new email", q.Name)
	}
	p := batchInsertParams(pr, q, req)
	out := &oas.EmailBatchAccepted{BatchID: p.BatchID, Rejected: []oas.BatchRejection{}, Emails: []oas.BatchEmailRef{}}
	indexes, err := batchEmails(ctx, p, q, req, out)
	if err != nil {
		return nil, err
	}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "createEmailBatch", req, http.StatusAccepted,
		func(tx *store.Store) (*oas.EmailBatchAccepted, error) {
			if len(p.Emails) == 0 {
				return out, nil
			}
			if err := tx.AppUsageTake(ctx, pr.appID, len(p.Emails), time.Now()); err != nil {
				return nil, quotaExceeded(err)
			}
			ids, err := tx.EmailInsertBatch(ctx, p)
			if err != nil {
				return nil, err
			}
			out.Accepted = len(ids)
			out.Emails = make([]oas.BatchEmailRef, len(ids))
			for i, id := range ids {
				out.Emails[i] = oas.BatchEmailRef{Index: indexes[i], ID: id}
			}
			return out, nil
		})
}

// batchShared is the batch's shared fields as a single email, so they are
// checked by the same rules as POST /v1/emails.
func batchShared(req *oas.EmailBatchRequest) *oas.EmailRequest {
	return &oas.EmailRequest{
		From: req.From, ReplyTo: req.ReplyTo, Subject: req.Subject, HTML: req.HTML, Text: req.Text,
		Headers: req.Headers, ScheduledAt: req.ScheduledAt, ExpiresAt: req.ExpiresAt,
	}
}

// batchInsertParams are the batch's shared fields as the store takes them.
func batchInsertParams(pr *principal, q *store.Queue, req *oas.EmailBatchRequest) *store.EmailBatchInsertParams {
	batchID, _ := store.NewID()
	p := &store.EmailBatchInsertParams{
		AppID: pr.appID, Queue: q, BatchID: batchID, MessageIDDomain: domainOf(req.From.Email),
		From:     store.Address{Email: req.From.Email, Name: req.From.Name.Or("")},
		Priority: int16(req.Priority.Or(int(q.Priority))), Sandbox: pr.sandbox,
		Emails: make([]store.BatchEmail, 0, len(req.Emails)),
	}
	if v, ok := req.ReplyTo.Get(); ok {
		s := formatAddress(v)
		p.ReplyTo = &s
	}
	if v, ok := req.Headers.Get(); ok {
		p.Headers = v
	}
	if v, ok := req.ScheduledAt.Get(); ok {
		v = v.UTC()
		p.ScheduledAt = &v
	}
	if v, ok := req.ExpiresAt.Get(); ok {
		v = v.UTC()
		p.ExpiresAt = &v
	}
	return p
}

// renderParallelMin is the batch size from which entries are validated and
// rendered on every core at once: 10,000 entries take ~15 ms on one core,
// all of it before the first write, while PostgreSQL waits.
const renderParallelMin = 1000

// batchEmails validates and renders each entry of req into p.Emails,
// recording rejected entries in out. It returns, for each accepted email,
// its index in req.Emails. Large batches are split into one contiguous run
// of entries per core; the runs are joined in order.
func batchEmails(ctx context.Context, p *store.EmailBatchInsertParams, q *store.Queue, req *oas.EmailBatchRequest, out *oas.EmailBatchAccepted) ([]int, error) {
	r, err := newBatchRenderer(ctx, q, req)
	if err != nil {
		return nil, err
	}
	n := len(req.Emails)
	runs := 1
	if n >= renderParallelMin {
		runs = runtime.GOMAXPROCS(0)
	}
	parts := make([]batchPart, runs)
	var wg sync.WaitGroup
	for w := range parts {
		wg.Go(func() { parts[w] = r.entries(ctx, n*w/runs, n*(w+1)/runs) })
	}
	wg.Wait()
	accepted := 0
	for i := range parts {
		if parts[i].err != nil {
			return nil, parts[i].err
		}
		accepted += len(parts[i].emails)
	}
	p.Emails = slices.Grow(p.Emails, accepted)
	indexes := make([]int, 0, accepted)
	for i := range parts {
		p.Emails = append(p.Emails, parts[i].emails...)
		indexes = append(indexes, parts[i].indexes...)
		out.Rejected = append(out.Rejected, parts[i].rejected...)
	}
	return indexes, nil
}

// batchRenderer holds what every entry of a batch shares: the parsed
// templates and the shared personalizations and metadata. It is read-only
// once made, so runs of entries may use it at the same time.
type batchRenderer struct {
	req                            *oas.EmailBatchRequest
	strict                         bool
	tpl                            *templates
	needVars                       bool
	sharedRawVars, sharedMeta      map[string]jx.Raw
	sharedVars                     map[string]any
	sharedVarsJSON, sharedMetaJSON json.RawMessage
	requestID                      string
}

func newBatchRenderer(ctx context.Context, q *store.Queue, req *oas.EmailBatchRequest) (*batchRenderer, error) {
	r := &batchRenderer{req: req, strict: q.Settings.StrictPersonalization, requestID: requestInfoFrom(ctx).ID}
	r.sharedRawVars, _ = req.Personalizations.Get()
	var err error
	if r.sharedVars, err = decodeRawVars(r.sharedRawVars); err != nil {
		return nil, invalid("personalizations", "personalizations is not a JSON object")
	}
	if r.sharedVarsJSON, err = rawMapJSONOrNil(r.sharedRawVars); err != nil {
		return nil, invalid("personalizations", "personalizations is not a JSON object")
	}
	r.sharedMeta, _ = req.Metadata.Get()
	if r.sharedMetaJSON, err = rawMapJSONOrNil(r.sharedMeta); err != nil {
		return nil, invalid("metadata", "metadata is not a JSON object")
	}
	var html, text *string
	if v, ok := req.HTML.Get(); ok {
		html = &v
	}
	if v, ok := req.Text.Get(); ok {
		text = &v
	}
	r.tpl = parseTemplates(req.Subject, html, text)
	r.needVars = r.tpl.hasVars()
	return r, nil
}

// batchPart is what one run of entries gave: the accepted emails with
// their indexes, and the rejected entries, each in order.
type batchPart struct {
	emails   []store.BatchEmail
	indexes  []int
	rejected []oas.BatchRejection
	err      error
}

// entries validates and renders the entries [lo, hi) of the batch.
func (r *batchRenderer) entries(ctx context.Context, lo, hi int) batchPart {
	out := batchPart{emails: make([]store.BatchEmail, 0, hi-lo), indexes: make([]int, 0, hi-lo)}
	reject := func(i int, e *apiError) {
		d := oas.ErrorDetail{Code: e.code, Message: e.message, RequestID: r.requestID}
		if e.field != "" {
			d.Field = oas.NewOptString(e.field)
		}
		out.rejected = append(out.rejected, oas.BatchRejection{Index: i, Error: d})
	}
	for i := lo; i < hi; i++ {
		if (i-lo)%1000 == 999 {
			if err := ctx.Err(); err != nil {
				out.err = err
				return out
			}
		}
		entry := &r.req.Emails[i]
		prefix := fieldIndex("emails", i)
		if e := validateBatchEntry(prefix, entry); e != nil {
			reject(i, e)
			continue
		}
		be := store.BatchEmail{
			To: store.Address{Email: entry.To.Email, Name: entry.To.Name.Or("")},
			Cc: addressesFromAPI(entry.Cc), Bcc: addressesFromAPI(entry.Bcc),
			Personalizations: r.sharedVarsJSON, Metadata: r.sharedMetaJSON,
		}
		vars := r.sharedVars
		var err error
		if own, ok := entry.Personalizations.Get(); ok && len(own) > 0 {
			if r.needVars {
				ownVars, err := decodeRawVars(own)
				if err != nil {
					reject(i, invalid(prefix+".personalizations", "personalizations is not a JSON object"))
					continue
				}
				vars = maps.Clone(r.sharedVars)
				if vars == nil {
					vars = ownVars
				} else {
					maps.Copy(vars, ownVars)
				}
			}
			if be.Personalizations, err = rawMapJSON(mergeRaw(r.sharedRawVars, own)); err != nil {
				reject(i, invalid(prefix+".personalizations", "personalizations is not a JSON object"))
				continue
			}
		}
		if own, ok := entry.Metadata.Get(); ok && len(own) > 0 {
			if be.Metadata, err = rawMapJSON(mergeRaw(r.sharedMeta, own)); err != nil {
				reject(i, invalid(prefix+".metadata", "metadata is not a JSON object"))
				continue
			}
		}
		rd, err := r.tpl.render(vars)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				ae.field = prefix + ".personalizations"
				reject(i, ae)
				continue
			}
			out.err = err
			return out
		}
		if len(rd.missing) > 0 && r.strict {
			reject(i, rd.strictError(prefix))
			continue
		}
		be.Subject, be.HTML, be.Text = rd.subject, rd.html, rd.text
		out.emails = append(out.emails, be)
		out.indexes = append(out.indexes, i)
	}
	return out
}

// validateBatchEntry checks one entry's recipients; errors name the field
// under prefix, e.g. emails[3].to.email.
func validateBatchEntry(prefix string, entry *oas.BatchRecipient) *apiError {
	if err := validateAddress(prefix+".to", entry.To); err != nil {
		return asAPIError(err)
	}
	for _, list := range []struct {
		name string
		addr []oas.Address
	}{{".cc", entry.Cc}, {".bcc", entry.Bcc}} {
		for j, a := range list.addr {
			if err := validateAddress(fieldIndex(prefix+list.name, j), a); err != nil {
				return asAPIError(err)
			}
		}
	}
	if n := 1 + len(entry.Cc) + len(entry.Bcc); n > maxRecipients {
		return invalid(prefix, "an email may have at most %d recipients across to, cc and bcc (got %d)", maxRecipients, n)
	}
	return nil
}

func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return invalid("", "%v", err)
}

// mergeRaw overlays own on shared: the entry's keys win.
func mergeRaw(shared, own map[string]jx.Raw) map[string]jx.Raw {
	if len(shared) == 0 {
		return own
	}
	out := maps.Clone(shared)
	maps.Copy(out, own)
	return out
}

func rawMapJSONOrNil(m map[string]jx.Raw) (json.RawMessage, error) {
	if len(m) == 0 {
		return nil, nil
	}
	return rawMapJSON(m)
}

// GetEmailBatch reports a batch's progress: its emails counted by status.
func (h *Handler) GetEmailBatch(ctx context.Context, params oas.GetEmailBatchParams) (*oas.EmailBatch, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	counts, err := h.store.EmailBatchCounts(ctx, pr.appID, params.BatchId)
	if err != nil {
		return nil, err
	}
	out := &oas.EmailBatch{BatchID: params.BatchId, CreatedAt: store.IDTime(params.BatchId)}
	for status, n := range counts {
		c := int(n)
		out.Total += c
		switch status {
		case store.StatusQueued:
			out.Queued += c
		case store.StatusProcessing:
			out.Processing += c
		case store.StatusSent, store.StatusDelivered:
			out.Sent += c
		case store.StatusFailed, store.StatusBounced, store.StatusExpired:
			out.Failed += c
		case store.StatusCancelled:
			out.Cancelled += c
		}
		// uncertain (maybe delivered, never resent) counts in total only.
	}
	if out.Total == 0 {
		return nil, notFound("batch")
	}
	return out, nil
}
