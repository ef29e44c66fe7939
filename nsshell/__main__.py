from nsshell.cli import main

raise SystemExit(main())
