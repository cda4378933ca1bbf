from coreml2hwx.cli import main

raise SystemExit(main())
