//go:build mage

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// SIGTERM (kill, systemd, CI runners cancelling a job) and SIGHUP cancel
// the running target the way Ctrl-C does: Mage's generated main listens
// only for SIGINT, and a magefile that died of SIGTERM would leave its
// cleanup undone. The first one becomes Mage's own SIGINT; later ones are
// dropped (a second SIGINT would make Mage exit without waiting for
// cleanup), since the wrapper and the process group may both send one.
func init() {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		<-term
		syscall.Kill(os.Getpid(), syscall.SIGINT)
	}()
}
