from geoseg.cli.app import main

main()
