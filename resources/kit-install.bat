@echo off
rem Installs Transfer Studio @VERSION@ from this folder, without any network connection.
rem
rem   install.bat [FOLDER]
rem
rem FOLDER (default: %LOCALAPPDATA%\Transfer Studio\app) receives a Python virtual environment with the app. Needs
rem Python @PYTHON@ (the wheels in this kit are made for it), found with the Python launcher (py -@PYTHON@) or set
rem PYTHON=C:\path\to\python.exe. The kit's weights are added to the app's model library, and a Start-menu shortcut
rem is made.
setlocal
set "KIT=%~dp0"
set "KIT=%KIT:~0,-1%"
set "TARGET=%~1"
if "%TARGET%"=="" set "TARGET=%LOCALAPPDATA%\Transfer Studio\app"
set "WANT=@PYTHON@"

if not "%PYTHON%"=="" goto havepython
set "PYTHON="
for /f "delims=" %%P in ('py -%WANT% -c "import sys; print(sys.executable)" 2^>nul') do set "PYTHON=%%P"
if "%PYTHON%"=="" (
    echo Transfer Studio was not installed: this kit needs Python %WANT%, which was not found. Install Python %WANT% from python.org ^(with the "py launcher"^), or set PYTHON=C:\path\to\python.exe, and run install.bat again. 1>&2
    exit /b 1
)
:havepython
"%PYTHON%" -c "import sys; sys.exit(0 if '%%d.%%d' %% sys.version_info[:2] == '%WANT%' else 1)"
if errorlevel 1 (
    echo Transfer Studio was not installed: %PYTHON% is not Python %WANT%. Set PYTHON to a Python %WANT% and run install.bat again. 1>&2
    exit /b 1
)

echo Installing Transfer Studio @VERSION@ into %TARGET% ...
"%PYTHON%" -m venv "%TARGET%\venv"
if errorlevel 1 (
    echo Transfer Studio was not installed: Python could not make a virtual environment in %TARGET%\venv. 1>&2
    exit /b 1
)
set "APP_PY=%TARGET%\venv\Scripts\python.exe"
"%APP_PY%" -m pip --isolated --disable-pip-version-check install --no-index --find-links "%KIT%\wheels" "transfer-studio==@VERSION@"
if errorlevel 1 (
    echo Transfer Studio was not installed: pip could not install the kit's wheels ^(see above^); make the kit again with pack-offline on a computer like this one. 1>&2
    exit /b 1
)
if exist "%KIT%\weights\weights.json" (
    "%APP_PY%" -m engine.kit register-weights "%KIT%\weights"
    if errorlevel 1 (
        echo The kit's weights could not be added to the model library ^(see above^). 1>&2
        exit /b 1
    )
)

rem A Start-menu shortcut to the windowed entry point (no console window).
powershell -NoProfile -Command "$s = (New-Object -ComObject WScript.Shell).CreateShortcut([Environment]::GetFolderPath('Programs') + '\Transfer Studio.lnk'); $s.TargetPath = '%TARGET%\venv\Scripts\transfer-studio-window.exe'; $s.Save()" >nul 2>&1

echo Transfer Studio is installed. Start it from the Start menu, or with:
echo   "%TARGET%\venv\Scripts\transfer-studio.exe"
endlocal
