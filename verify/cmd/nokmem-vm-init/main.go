// Command nokmem-vm-init is the /init of the verifier's throwaway VM
// (verify/vm builds it statically, CGO_ENABLED=0, into the initramfs). It
// is not a command to run by hand: see verify/guest.
package main

import "github.com/nokmem/nokmem/verify/guest"

func main() { guest.Main() }
