from vipmgr.cli.main import main

main()
