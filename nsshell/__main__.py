from nsshell.entry import main

raise SystemExit(main())
