package mail

import (
	"context"
	"errors"
	"os"
)

// StageDone is the stage Probe reports when the whole handshake succeeded.
const StageDone = "done"

// Probe checks that srv accepts a session the way a delivery would open
// one — connect, greeting and EHLO, TLS as configured, AUTH when a username
// is set — then ends it with QUIT, sending no mail. It bounds the handshake
// by srv's timeout and ctx. On success it returns StageDone; on failure the
// stage that failed (StageConnect, StageTLS or StageAuth) and a *SendError.
func Probe(ctx context.Context, srv Server) (stage string, err error) {
	c, err := dial(ctx, &srv, heloName(&srv))
	if err != nil {
		var se *SendError
		if errors.As(err, &se) {
			return se.Stage, err
		}
		return StageConnect, err
	}
	// A QUIT the server fumbles does not undo a handshake that worked, so
	// close's error handling (best effort) is enough.
	c.close()
	return StageDone, nil
}

// heloName is the name a session to srv announces with EHLO: the
// configured one, else this host's name.
func heloName(srv *Server) string {
	if srv.HeloName != "" {
		return srv.HeloName
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}
