//go:build unix && !aix

package mail

import (
	"errors"
	"net"
	"syscall"
)

// idleQuiet reports whether an idle session's socket is still open with
// nothing unread: the server has neither closed it nor sent anything
// unasked (such as a 421 before closing). It peeks at the socket without
// blocking and without consuming, so TLS sessions are unaffected.
func idleQuiet(raw net.Conn) bool {
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	quiet := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: open, and nothing to read. A nil error means a byte or
		// end of stream; any other error a broken connection.
		quiet = errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK)
		return true
	})
	return err == nil && quiet
}
