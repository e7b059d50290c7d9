package handlers

import (
	"bytes"
	"context"
	"errors"
	"html/template"
	"strings"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// The unsubscribe endpoints are public: whoever holds a token (the
// recipient, from the List-Unsubscribe header or a link) may use it. A
// token names an email and is bound to its one recipient by an HMAC (see
// mail.Unsubscribe), so it cannot be forged or pointed at another address.
// Open and click tracking (trackOpen, trackClick) are not built yet.

// unsubscribeRecipient checks a token and returns the email and the
// recipient it was made for; any failure is a 404, telling a prober nothing.
func (h *Handler) unsubscribeRecipient(ctx context.Context, token string) (*store.EmailForSend, string, error) {
	id, err := h.unsub.TokenEmail(token)
	if err != nil {
		return nil, "", notFound("unsubscribe link")
	}
	e, err := h.store.EmailGetForSend(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", notFound("unsubscribe link")
	}
	if err != nil {
		return nil, "", err
	}
	var rcpts []store.Address
	for _, l := range [][]store.Address{e.To, e.Cc, e.Bcc} {
		rcpts = append(rcpts, l...)
	}
	// Links are only made for emails with one recipient.
	if len(rcpts) != 1 || !h.unsub.Verify(token, rcpts[0].Email) {
		return nil, "", notFound("unsubscribe link")
	}
	return e, rcpts[0].Email, nil
}

// UnsubscribeOneClick suppresses the recipient for the sending app (RFC
// 8058 one-click). Repeating it changes nothing.
func (h *Handler) UnsubscribeOneClick(ctx context.Context, req oas.OptUnsubscribeForm, params oas.UnsubscribeOneClickParams) error {
	e, rcpt, err := h.unsubscribeRecipient(ctx, params.Token)
	if err != nil {
		return err
	}
	method := "page"
	if f, ok := req.Get(); ok && f.ListUnsubscribe.Or("") == oas.UnsubscribeFormListMinusUnsubscribeOneClick {
		method = "one_click"
	}
	_, err = h.store.RecordUnsubscribe(ctx, &store.UnsubscribeParams{
		AppID: e.AppID, EmailID: e.ID, Recipient: rcpt, Method: method,
	})
	return err
}

var unsubscribePage = template.Must(template.New("unsubscribe").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>Unsubscribe</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto; padding: 0 1em">
<h1>Unsubscribe</h1>
<p>Stop receiving these emails at {{.Masked}}?</p>
<form method="post" action="/u/{{.Token}}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form>
</body></html>
`))

// UnsubscribePage shows a confirmation page whose button POSTs to the
// one-click endpoint. Viewing it changes nothing: mail scanners follow
// links, and must not unsubscribe anyone by doing so.
func (h *Handler) UnsubscribePage(ctx context.Context, params oas.UnsubscribePageParams) (oas.UnsubscribePageOK, error) {
	_, rcpt, err := h.unsubscribeRecipient(ctx, params.Token)
	if err != nil {
		return oas.UnsubscribePageOK{}, err
	}
	var b bytes.Buffer
	err = unsubscribePage.Execute(&b, map[string]string{"Token": strings.ToLower(params.Token), "Masked": maskAddress(rcpt)})
	if err != nil {
		return oas.UnsubscribePageOK{}, err
	}
	return oas.UnsubscribePageOK{Data: &b}, nil
}

// maskAddress shows enough of an address for its owner to recognise it,
// and little to anyone else who sees the page: "j***@example.com".
func maskAddress(a string) string {
	local, domain, ok := strings.Cut(a, "@")
	if !ok || local == "" {
		return "your address"
	}
	return local[:1] + "***@" + domain
}
