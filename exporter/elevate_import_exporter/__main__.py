from elevate_import_exporter.cli import main

main()
