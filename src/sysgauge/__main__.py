from sysgauge.cli import main

raise SystemExit(main())
