package owner

import (
	"os/exec"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	id := Self()
	if id.PID <= 0 || id.Start == 0 || id.NS == 0 {
		t.Fatalf("self: %+v", id)
	}
	got, ok := Parse(id.String())
	if !ok || got != id {
		t.Fatalf("Parse(%q) = %+v, %v", id.String(), got, ok)
	}
	for _, bad := range []string{"", "123", "x-y-1-2-3", "ab-cd-1-0-3", "ab-cd-1-2", "ab-cd-1-2-3-4"} {
		if _, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestCheck(t *testing.T) {
	me := Self()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadID := me
	deadID.PID = dead.Process.Pid

	reused := me
	reused.Start++ // this pid, but started at another time

	otherHost := me
	otherHost.Host = "deadbeef"
	if otherHost.Host == me.Host {
		otherHost.Host = "feedface"
	}
	rebooted := me
	rebooted.Boot = "00000001"
	otherNS := me
	otherNS.NS++

	for _, c := range []struct {
		name string
		id   ID
		want State
	}{
		{"this process", me, Alive},
		{"exited process", deadID, Gone},
		{"reused pid", reused, Gone},
		{"before a reboot", rebooted, Gone},
		{"another host", otherHost, Unknown},
		{"another pid namespace", otherNS, Unknown},
	} {
		if got := c.id.Check(); got != c.want {
			t.Errorf("%s (%s): %v, want %v", c.name, c.id, got, c.want)
		}
	}
}
