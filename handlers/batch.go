package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
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

// batchEmails validates and renders each entry of req into p.Emails,
// recording rejected entries in out. It returns, for each accepted email,
// its index in req.Emails.
func batchEmails(ctx context.Context, p *store.EmailBatchInsertParams, q *store.Queue, req *oas.EmailBatchRequest, out *oas.EmailBatchAccepted) ([]int, error) {
	sharedRawVars, _ := req.Personalizations.Get()
	sharedVars, err := decodeRawVars(sharedRawVars)
	if err != nil {
		return nil, invalid("personalizations", "personalizations is not a JSON object")
	}
	sharedVarsJSON, err := rawMapJSONOrNil(sharedRawVars)
	if err != nil {
		return nil, invalid("personalizations", "personalizations is not a JSON object")
	}
	sharedMeta, _ := req.Metadata.Get()
	sharedMetaJSON, err := rawMapJSONOrNil(sharedMeta)
	if err != nil {
		return nil, invalid("metadata", "metadata is not a JSON object")
	}
	var html, text *string
	if v, ok := req.HTML.Get(); ok {
		html = &v
	}
	if v, ok := req.Text.Get(); ok {
		text = &v
	}
	tpl := parseTemplates(req.Subject, html, text)
	needVars := tpl.hasVars()
	requestID := requestInfoFrom(ctx).ID
	reject := func(i int, e *apiError) {
		d := oas.ErrorDetail{Code: e.code, Message: e.message, RequestID: requestID}
		if e.field != "" {
			d.Field = oas.NewOptString(e.field)
		}
		out.Rejected = append(out.Rejected, oas.BatchRejection{Index: i, Error: d})
	}
	indexes := make([]int, 0, len(req.Emails))
	for i := range req.Emails {
		if i%1000 == 999 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		entry := &req.Emails[i]
		prefix := fieldIndex("emails", i)
		if e := validateBatchEntry(prefix, entry); e != nil {
			reject(i, e)
			continue
		}
		be := store.BatchEmail{
			To: store.Address{Email: entry.To.Email, Name: entry.To.Name.Or("")},
			Cc: addressesFromAPI(entry.Cc), Bcc: addressesFromAPI(entry.Bcc),
			Personalizations: sharedVarsJSON, Metadata: sharedMetaJSON,
		}
		vars := sharedVars
		if own, ok := entry.Personalizations.Get(); ok && len(own) > 0 {
			if needVars {
				ownVars, err := decodeRawVars(own)
				if err != nil {
					reject(i, invalid(prefix+".personalizations", "personalizations is not a JSON object"))
					continue
				}
				vars = maps.Clone(sharedVars)
				if vars == nil {
					vars = ownVars
				} else {
					maps.Copy(vars, ownVars)
				}
			}
			if be.Personalizations, err = rawMapJSON(mergeRaw(sharedRawVars, own)); err != nil {
				reject(i, invalid(prefix+".personalizations", "personalizations is not a JSON object"))
				continue
			}
		}
		if own, ok := entry.Metadata.Get(); ok && len(own) > 0 {
			if be.Metadata, err = rawMapJSON(mergeRaw(sharedMeta, own)); err != nil {
				reject(i, invalid(prefix+".metadata", "metadata is not a JSON object"))
				continue
			}
		}
		r, err := tpl.render(vars)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				ae.field = prefix + ".personalizations"
				reject(i, ae)
				continue
			}
			return nil, err
		}
		if len(r.missing) > 0 && q.Settings.StrictPersonalization {
			reject(i, r.strictError(prefix))
			continue
		}
		be.Subject, be.HTML, be.Text = r.subject, r.html, r.text
		p.Emails = append(p.Emails, be)
		indexes = append(indexes, i)
	}
	return indexes, nil
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
