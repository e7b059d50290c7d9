package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-faster/jx"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// CreateEmail validates an email and accepts it: the row, its "queued"
// event and its send job commit in one transaction before the 202.
func (h *Handler) CreateEmail(ctx context.Context, req *oas.EmailRequest, params oas.CreateEmailParams) (*oas.EmailAccepted, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if err := validateEmailRequest(req, time.Now()); err != nil {
		return nil, err
	}
	if err := h.checkPriority(ctx, pr.appID, req.Priority); err != nil {
		return nil, err
	}
	queueName := req.Queue.Or(store.DefaultQueueName)
	if _, keyed := params.IdempotencyKey.Get(); !keyed && h.accepts != nil {
		out, err := h.acceptEmail(ctx, pr, req, queueName, true)
		if errors.Is(err, errStaleQueue) {
			out, err = h.acceptEmail(ctx, pr, req, queueName, false)
		}
		return out, err
	}
	q, err := h.store.QueueGetByName(ctx, pr.appID, queueName)
	if err != nil {
		return nil, queueLookupError(err, queueName)
	}
	p, warnings, err := prepareEmail(pr, q, req)
	if err != nil {
		return nil, err
	}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "createEmail", req, http.StatusAccepted,
		func(tx *store.Store) (*oas.EmailAccepted, error) {
			e, err := tx.EmailAccept(ctx, p)
			if err != nil {
				return nil, quotaExceeded(err)
			}
			out := withSuppressed(emailAcceptedToAPI(e), p, e)
			out.Warnings = warnings
			return out, nil
		})
}

// errStaleQueue asks acceptEmail's caller to run it again with a fresh
// read of the queue: the cached one it used has changed.
var errStaleQueue = errors.New("cached queue is stale")

// acceptEmail accepts an email without an Idempotency-Key through the
// group commit (store.AcceptWriter), answering only after its transaction
// has committed. With useCache, it may take the queue from the cache; any
// refusal that depends on the queue, or a queue changed since it was
// cached, is then errStaleQueue, so the caller redoes the request with a
// fresh read and answers exactly as without the cache.
func (h *Handler) acceptEmail(ctx context.Context, pr *principal, req *oas.EmailRequest, queueName string, useCache bool) (*oas.EmailAccepted, error) {
	var (
		q       *store.Queue
		version int64
		cached  bool
		err     error
	)
	if useCache {
		q, version, cached, err = h.queues.get(ctx, pr.appID, queueName)
	} else {
		q, err = h.store.QueueGetByName(ctx, pr.appID, queueName)
	}
	if err != nil {
		return nil, queueLookupError(err, queueName)
	}
	p, warnings, err := prepareEmail(pr, q, req)
	if err != nil {
		if cached {
			h.queues.drop(pr.appID, queueName)
			return nil, errStaleQueue
		}
		return nil, err
	}
	p.QueueVersion = version // 0 without the cache: not checked
	e, err := h.accepts.Accept(ctx, p)
	if errors.Is(err, store.ErrQueueChanged) {
		h.queues.drop(pr.appID, queueName)
		return nil, errStaleQueue
	}
	if err != nil {
		return nil, quotaExceeded(err)
	}
	out := withSuppressed(emailAcceptedToAPI(e), p, e)
	out.Warnings = warnings
	return out, nil
}

func queueLookupError(err error, queueName string) error {
	if errors.Is(err, store.ErrNotFound) {
		return invalid("queue", "queue %q does not exist; create it with POST /v1/queues", queueName)
	}
	return err
}

// prepareEmail checks req against its queue q and turns it into what the
// store inserts, personalized, with the personalization warnings.
func prepareEmail(pr *principal, q *store.Queue, req *oas.EmailRequest) (*store.EmailInsertParams, []string, error) {
	if q.IsDraining {
		return nil, nil, conflict("queue_draining", "queue %q is draining and accepts no new email", q.Name)
	}
	p, err := emailInsertParams(pr, q, req)
	if err != nil {
		return nil, nil, err
	}
	warnings, err := personalizeEmail(p, q.Settings.StrictPersonalization)
	if err != nil {
		return nil, nil, err
	}
	return p, warnings, nil
}

// emailInsertParams turns a validated request into what the store inserts.
func emailInsertParams(pr *principal, q *store.Queue, req *oas.EmailRequest) (*store.EmailInsertParams, error) {
	p := &store.EmailInsertParams{
		AppID: pr.appID, Queue: q, Subject: req.Subject,
		From:            store.Address{Email: req.From.Email, Name: req.From.Name.Or("")},
		To:              addressesFromAPI(req.To),
		Cc:              addressesFromAPI(req.Cc),
		Bcc:             addressesFromAPI(req.Bcc),
		MessageIDDomain: domainOf(req.From.Email),
		Priority:        int16(req.Priority.Or(int(q.Priority))),
		Sandbox:         pr.sandbox,
	}
	if v, ok := req.ReplyTo.Get(); ok {
		s := formatAddress(v)
		p.ReplyTo = &s
	}
	if v, ok := req.HTML.Get(); ok {
		p.HTML = &v
	}
	if v, ok := req.Text.Get(); ok {
		p.Text = &v
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
	var err error
	if v, ok := req.Personalizations.Get(); ok {
		if p.Personalizations, err = rawMapJSON(v); err != nil {
			return nil, invalid("personalizations", "personalizations is not a JSON object")
		}
	}
	if v, ok := req.Metadata.Get(); ok {
		if p.Metadata, err = rawMapJSON(v); err != nil {
			return nil, invalid("metadata", "metadata is not a JSON object")
		}
	}
	return p, nil
}

// GetEmail returns one of the calling app's emails with its bodies.
func (h *Handler) GetEmail(ctx context.Context, params oas.GetEmailParams) (*oas.Email, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	e, err := h.store.EmailGet(ctx, pr.appID, params.EmailId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("email")
	}
	if err != nil {
		return nil, err
	}
	out := emailToAPI(e, time.Now())
	return &out, nil
}

// ListEmails lists the calling app's emails, newest first, without bodies.
func (h *Handler) ListEmails(ctx context.Context, params oas.ListEmailsParams) (*oas.EmailList, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	p := &store.EmailListParams{AppID: pr.appID, Limit: params.Limit.Or(50)}
	if v, ok := params.Status.Get(); ok {
		s := string(v)
		p.Status = &s
	}
	if v, ok := params.Queue.Get(); ok {
		p.Queue = &v
	}
	if v, ok := params.BatchID.Get(); ok {
		p.BatchID = &v
	}
	if v, ok := params.Since.Get(); ok {
		p.Since = &v
	}
	if p.After, err = h.cursorParam(params.Cursor); err != nil {
		return nil, err
	}
	list, more, err := h.store.EmailList(ctx, p)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := &oas.EmailList{HasMore: more}
	out.Data, out.Cursor = page(h, list, more, func(e *store.Email) oas.Email { return emailToAPI(e, now) })
	return out, nil
}

// ListEmailEvents lists one email's history, oldest first.
func (h *Handler) ListEmailEvents(ctx context.Context, params oas.ListEmailEventsParams) (*oas.EmailEventList, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	// Look the email up first so another app's id is a 404, not an empty list.
	if _, err := h.store.EmailGet(ctx, pr.appID, params.EmailId); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, notFound("email")
		}
		return nil, err
	}
	p := &store.EventListParams{AppID: pr.appID, EmailID: params.EmailId, Limit: params.Limit.Or(50)}
	if p.After, err = h.cursorParam(params.Cursor); err != nil {
		return nil, err
	}
	list, more, err := h.store.EventList(ctx, p)
	if err != nil {
		return nil, err
	}
	out := &oas.EmailEventList{HasMore: more}
	out.Data, out.Cursor = page(h, list, more, eventToAPI)
	return out, nil
}

func eventToAPI(ev *store.Event) oas.EmailEvent {
	item := oas.EmailEvent{ID: ev.ID, EmailID: ev.EmailID, Type: oas.EmailEventType(ev.Type), CreatedAt: ev.CreatedAt}
	if len(ev.Data) > 0 && string(ev.Data) != "null" {
		var data oas.EventData
		if err := data.UnmarshalJSON(ev.Data); err == nil {
			item.Data = oas.NewOptEventData(data)
		}
	}
	return item
}

func (h *Handler) cursorParam(c oas.OptString) (*store.Cursor, error) {
	v, ok := c.Get()
	if !ok || v == "" {
		return nil, nil
	}
	cur, err := h.cursors.decode(v)
	if err != nil {
		e := newAPIError(http.StatusBadRequest, "invalid_cursor", "%v", err)
		e.field = "cursor"
		return nil, e
	}
	return cur, nil
}

func emailAcceptedToAPI(e *store.Email) *oas.EmailAccepted {
	out := &oas.EmailAccepted{
		ID: e.ID, Status: oas.EmailStatus(e.Status), Queue: e.QueueName, MessageID: e.MessageID,
		CreatedAt: e.CreatedAt,
	}
	if e.ScheduledAt != nil {
		out.ScheduledAt = oas.NewOptDateTime(*e.ScheduledAt)
	}
	for _, list := range [][]store.Address{e.To, e.Cc, e.Bcc} {
		for _, a := range list {
			out.Recipients = append(out.Recipients, oas.RecipientResult{Email: a.Email, Result: oas.RecipientResultResultQueued})
		}
	}
	return out
}

func emailToAPI(e *store.Email, now time.Time) oas.Email {
	out := oas.Email{
		ID: e.ID, Status: oas.EmailStatus(e.Status), Queue: e.QueueName, QueueID: e.QueueID,
		MessageID: e.MessageID, From: oas.Address{Email: e.FromAddress}, Subject: e.Subject,
		To: addressesToAPI(e.To), Cc: addressesToAPI(e.Cc), Bcc: addressesToAPI(e.Bcc),
		Priority: int(e.Priority), RetryCount: int(e.RetryCount), MaxRetries: int(e.MaxRetries),
		CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt,
	}
	if e.FromName != nil {
		out.From.Name = oas.NewOptString(*e.FromName)
	}
	if e.ReplyTo != nil {
		if a, err := parseAddress(*e.ReplyTo); err == nil {
			out.ReplyTo = oas.NewOptAddress(a)
		}
	}
	if e.HTML != nil {
		out.HTML = oas.NewOptString(*e.HTML)
	}
	if e.Text != nil {
		out.Text = oas.NewOptString(*e.Text)
	}
	if len(e.Headers) > 0 {
		out.Headers = oas.NewOptHeaders(e.Headers)
	}
	if len(e.Metadata) > 0 && string(e.Metadata) != "null" {
		var m oas.Metadata
		if err := m.UnmarshalJSON(e.Metadata); err == nil {
			out.Metadata = oas.NewOptMetadata(m)
		}
	}
	if e.LastError != nil {
		out.LastError = oas.NewOptString(*e.LastError)
	}
	if e.BatchID != nil {
		out.BatchID = oas.NewOptUUID(*e.BatchID)
	}
	for dst, src := range map[*oas.OptDateTime]*time.Time{
		&out.ScheduledAt: e.ScheduledAt, &out.ExpiresAt: e.ExpiresAt, &out.SentAt: e.SentAt,
		&out.DeliveredAt: e.DeliveredAt,
	} {
		if src != nil {
			*dst = oas.NewOptDateTime(*src)
		}
	}
	if reason, next := waitingReason(e, now); reason != "" {
		out.WaitingReason = oas.NewOptString(reason)
		if next != nil {
			out.NextAttemptAt = oas.NewOptDateTime(*next)
		}
	}
	return out
}

// waitingReason explains, in words, why an email that is not sent yet is
// still waiting, and when it will next be tried.
func waitingReason(e *store.Email, now time.Time) (string, *time.Time) {
	if e.Status != store.StatusQueued && e.Status != store.StatusProcessing {
		return "", nil
	}
	if e.Status == store.StatusProcessing {
		return "being sent now", nil
	}
	next := e.NextAttemptAt
	switch {
	case e.WaitingReason != nil:
		return *e.WaitingReason, next
	case e.RetryCount > 0 && e.LastError != nil:
		return fmt.Sprintf("retry %d of %d after error: %s", e.RetryCount, e.MaxRetries, *e.LastError), next
	case next != nil && next.After(now) && e.ScheduledAt != nil:
		return "scheduled for " + e.ScheduledAt.UTC().Format(time.RFC3339), next
	case next != nil && next.After(now):
		return "waiting until " + next.UTC().Format(time.RFC3339), next
	}
	return "waiting for a free worker", next
}

func addressesFromAPI(in []oas.Address) []store.Address {
	if len(in) == 0 {
		return nil
	}
	out := make([]store.Address, len(in))
	for i, a := range in {
		out[i] = store.Address{Email: a.Email, Name: a.Name.Or("")}
	}
	return out
}

func addressesToAPI(in []store.Address) []oas.Address {
	if in == nil {
		return nil
	}
	out := make([]oas.Address, len(in))
	for i, a := range in {
		out[i] = oas.Address{Email: a.Email}
		if a.Name != "" {
			out[i].Name = oas.NewOptString(a.Name)
		}
	}
	return out
}

// rawMapJSON encodes a free-form JSON object from the request.
func rawMapJSON(m map[string]jx.Raw) (json.RawMessage, error) {
	var e jx.Encoder
	e.ObjStart()
	for k, v := range m {
		e.FieldStart(k)
		if len(v) == 0 {
			e.Null()
			continue
		}
		e.Raw(v)
	}
	e.ObjEnd()
	b := e.Bytes()
	if !json.Valid(b) {
		return nil, errors.New("invalid JSON")
	}
	return b, nil
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return "mailqueue.invalid"
}
