// prog is a module-mode binary with one dependency, for the SBOM tests.
package main

import cdx "github.com/CycloneDX/cyclonedx-go"

func main() { _ = cdx.NewBOM() }
