from trtdeploy.cli import main

raise SystemExit(main())
