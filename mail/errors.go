package mail

import (
	"errors"
	"fmt"
	"net/textproto"
	"strings"
)

// Stages of an SMTP delivery, as reported in SendError.Stage.
const (
	// StageConnect covers waiting for a pooled connection, dialling, the
	// greeting and EHLO.
	StageConnect = "connect"
	// StageTLS covers the implicit TLS handshake and STARTTLS.
	StageTLS = "tls"
	// StageAuth covers SMTP AUTH.
	StageAuth = "auth"
	// StageMail covers MAIL FROM, and also a message that cannot be built.
	StageMail = "mail"
	// StageRcpt covers RCPT TO.
	StageRcpt = "rcpt"
	// StageData covers the DATA command, writing the body, and a 4xx/5xx
	// final reply after the body.
	StageData = "data"
	// StageDataSent means the body including the final "." was written but
	// no reply was read; such errors are always Uncertain.
	StageDataSent = "data_sent"
)

// ErrPoolClosed is returned (wrapped in a SendError) by Send on a closed Pool.
var ErrPoolClosed = errors.New("smtp pool is closed")

// SendError describes a failed delivery attempt. Pool.Send returns one for
// every failure.
type SendError struct {
	// Stage is one of the Stage* constants.
	Stage string
	// Code is the SMTP reply code, or 0 when the server did not reply.
	Code int
	// EnhancedCode is the RFC 3463 status ("5.1.1") if the reply carried one.
	EnhancedCode string
	// Permanent is set for 5xx replies: retrying the same message is futile.
	Permanent bool
	// Uncertain is set when the whole message including the final "." was
	// written but no reply was read: the server may have accepted it, so it
	// must not be blindly resent.
	Uncertain bool
	// Err is the underlying error.
	Err error
}

// Error describes the failure with its stage and, if any, the server reply.
func (e *SendError) Error() string {
	var b strings.Builder
	b.WriteString("smtp ")
	b.WriteString(e.Stage)
	if e.Uncertain {
		b.WriteString(" (delivery uncertain)")
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		fmt.Fprintf(&b, "reply %d %s", e.Code, e.EnhancedCode)
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *SendError) Unwrap() error { return e.Err }

// IsPermanent reports whether err is a SendError caused by a 5xx reply.
func IsPermanent(err error) bool {
	var se *SendError
	return errors.As(err, &se) && se.Permanent
}

// IsUncertain reports whether err is a SendError after which the message may
// or may not have been delivered.
func IsUncertain(err error) bool {
	var se *SendError
	return errors.As(err, &se) && se.Uncertain
}

// newSendError classifies err: a *textproto.Error is a server reply and
// carries the code; anything else (I/O error, EOF, timeout, TLS failure) means
// no reply was read.
func newSendError(stage string, err error) *SendError {
	se := &SendError{Stage: stage, Err: err}
	var tpErr *textproto.Error
	if errors.As(err, &tpErr) {
		se.Code = tpErr.Code
		se.EnhancedCode = enhancedCode(tpErr.Msg)
		se.Permanent = tpErr.Code >= 500 && tpErr.Code < 600
	}
	return se
}

// enhancedCode extracts a leading RFC 3463 "class.subject.detail" status.
func enhancedCode(msg string) string {
	first, _, _ := strings.Cut(msg, " ")
	parts := strings.Split(first, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || !strings.ContainsAny(parts[0], "245") {
		return ""
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return ""
		}
	}
	return first
}

// replied reports whether err carries a server reply, i.e. the connection
// itself is still in a known protocol state.
func replied(err error) (code int, ok bool) {
	var tpErr *textproto.Error
	if errors.As(err, &tpErr) {
		return tpErr.Code, true
	}
	return 0, false
}
