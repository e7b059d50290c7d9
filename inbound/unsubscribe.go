package inbound

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/store"
)

// Unsubscribes handles mail sent to the mailto link of List-Unsubscribe
// (unsubscribe+<token>@…, RFC 2369): the token's recipient is suppressed
// for the sending app, as the one-click link does. Messages with any other
// recipient go on to next as well.
//
// A token that does not check out is dropped quietly: answering with a
// rejection would send backscatter to whatever address the message claims.
func Unsubscribes(st *store.Store, u *mail.Unsubscribe, logger *slog.Logger, next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, m *Message) error {
		others := false
		for _, rcpt := range m.To {
			local, _, _ := strings.Cut(rcpt, "@")
			token, ok := strings.CutPrefix(strings.ToLower(local), "unsubscribe+")
			if !ok {
				others = true
				continue
			}
			if err := unsubscribe(ctx, st, u, token); err != nil {
				if !errors.Is(err, errBadUnsubscribe) {
					return err // temporary: the sender will try again
				}
				logger.Info("unsubscribe mail with an invalid token", "remote_addr", m.RemoteAddr)
			}
		}
		if others {
			return next.HandleInbound(ctx, m)
		}
		return nil
	})
}

var errBadUnsubscribe = errors.New("invalid unsubscribe token")

func unsubscribe(ctx context.Context, st *store.Store, u *mail.Unsubscribe, token string) error {
	id, err := u.TokenEmail(token)
	if err != nil {
		return errBadUnsubscribe
	}
	e, err := st.EmailGetForSend(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return errBadUnsubscribe
	}
	if err != nil {
		return err
	}
	var rcpts []store.Address
	for _, l := range [][]store.Address{e.To, e.Cc, e.Bcc} {
		rcpts = append(rcpts, l...)
	}
	if len(rcpts) != 1 || !u.Verify(token, rcpts[0].Email) {
		return errBadUnsubscribe
	}
	_, err = st.RecordUnsubscribe(ctx, &store.UnsubscribeParams{
		AppID: e.AppID, EmailID: e.ID, Recipient: rcpts[0].Email, Method: "mailto",
	})
	return err
}
